// KvPool: row bookkeeping of the decoder cache (self rows per beam, cross rows
// per sequence), compaction on free, and beam reordering, over small CPU
// tensors from a backend that only allocates caches.
#include "batching/kv_pool.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace florence::batching {
namespace {

using engine::KvPair;
using ::testing::ElementsAre;
using ::testing::Pair;

constexpr int64_t kSelfLen = 4;
constexpr int64_t kCrossLen = 3;

// Allocates caches like a model ([1, batch, 1, len, 2] float); nothing else.
class CacheOnlyBackend final : public engine::ModelBackend {
 public:
  c10::Device device() const override { return c10::Device(c10::kCPU); }
  absl::StatusOr<at::Tensor> ImageFeatures(const at::Tensor&) override { return Unused(); }
  absl::StatusOr<at::Tensor> Encode(const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&) override {
    return Unused();
  }
  absl::StatusOr<KvPair> CrossKv(const at::Tensor&) override { return Unused(); }
  absl::StatusOr<KvPair> EmptySelfCache(int64_t batch, int64_t max_len) override {
    return KvPair{at::zeros({1, batch, 1, max_len, 2}), at::zeros({1, batch, 1, max_len, 2})};
  }
  absl::StatusOr<at::Tensor> DecodeStep(const at::Tensor&, const at::Tensor&, KvPair*,
                                        const KvPair&, const at::Tensor&,
                                        const at::Tensor&) override {
    return Unused();
  }

 private:
  static absl::Status Unused() { return absl::UnimplementedError("not used by KvPool"); }
};

class KvPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const KvPool::Shape shape{.layers = 1, .heads = 1, .head_dim = 2, .self_len = kSelfLen,
                              .cross_len = kCrossLen};
    // 2 (K, V) * 2 (hd) * 4 bytes per position: self row 64 bytes, cross row 48.
    auto pool = KvPool::Create(backend_, shape, /*budget_bytes=*/4 * 112 + 50, /*max_rows=*/16);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
  }

  // Fills self row `row` (K and V, every position) with `value`.
  void FillSelf(int64_t row, float value) {
    KvPair self = pool_->SelfView(kSelfLen);
    self.k.select(1, row).fill_(value);
    self.v.select(1, row).fill_(-value);
  }
  // Writes a one-sequence cross K/V of `value` with `len` real positions into cross row `row`.
  void WriteCross(int64_t row, float value, int64_t len) {
    const KvPair cross{at::full({1, 1, 1, kCrossLen, 2}, value),
                       at::full({1, 1, 1, kCrossLen, 2}, -value)};
    pool_->WriteCross(row, cross, 0, len, at::ones({kCrossLen}, at::kLong));
  }
  float Self(int64_t row, int64_t pos) {
    return pool_->SelfView(kSelfLen).k[0][row][0][pos][0].item<float>();
  }
  float Cross(int64_t row) { return pool_->CrossView(kCrossLen).k[0][row][0][0][0].item<float>(); }

  c10::InferenceMode guard_;
  CacheOnlyBackend backend_;
  std::unique_ptr<KvPool> pool_;
};

TEST_F(KvPoolTest, BudgetCountsOneSelfAndOneCrossRowPerSequence) {
  EXPECT_EQ(pool_->row_bytes(), 112);
  EXPECT_EQ(pool_->capacity(), 4);
  EXPECT_EQ(pool_->bytes_in_use(), 0);

  const KvPool::Shape shape{.layers = 1, .heads = 1, .head_dim = 2, .self_len = kSelfLen,
                            .cross_len = kCrossLen};
  const auto none = KvPool::Create(backend_, shape, /*budget_bytes=*/111, /*max_rows=*/16);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(none.status().message()), ::testing::HasSubstr("--kv_cache_bytes"));
}

TEST_F(KvPoolTest, BeamsShareOneCrossRowAndFreeKeepsBothKindsDense) {
  // Sequence A: 3 beams; sequence B: 1 row.
  const std::vector<int64_t> a = pool_->Allocate(3);
  const int64_t a_cross = pool_->AllocateCross();
  const std::vector<int64_t> b = pool_->Allocate(1);
  const int64_t b_cross = pool_->AllocateCross();
  EXPECT_THAT(a, ElementsAre(0, 1, 2));
  EXPECT_THAT(b, ElementsAre(3));
  EXPECT_EQ(a_cross, 0);
  EXPECT_EQ(b_cross, 1);
  EXPECT_EQ(pool_->used(), 4);
  EXPECT_EQ(pool_->used_cross(), 2);
  EXPECT_EQ(pool_->free_rows(), 0);
  EXPECT_EQ(pool_->bytes_in_use(), 4 * 64 + 2 * 48);
  for (int64_t r = 0; r < 4; ++r) FillSelf(r, static_cast<float>(r + 1));
  WriteCross(a_cross, 10.0f, 2);
  WriteCross(b_cross, 20.0f, 3);
  EXPECT_EQ(pool_->MaskView(kCrossLen)[0].sum().item<int64_t>(), 2);

  const KvPool::Moves moves = pool_->Free(a, {a_cross}, kSelfLen, kCrossLen);
  EXPECT_THAT(moves.self, ElementsAre(Pair(3, 0)));
  EXPECT_THAT(moves.cross, ElementsAre(Pair(1, 0)));
  EXPECT_EQ(pool_->used(), 1);
  EXPECT_EQ(pool_->used_cross(), 1);
  EXPECT_EQ(pool_->bytes_in_use(), 64 + 48);
  // B's rows now sit at 0, with their values and mask.
  EXPECT_EQ(Self(0, 3), 4.0f);
  EXPECT_EQ(pool_->SelfView(kSelfLen).v[0][0][0][3][1].item<float>(), -4.0f);
  EXPECT_EQ(Cross(0), 20.0f);
  EXPECT_EQ(pool_->MaskView(kCrossLen)[0].sum().item<int64_t>(), 3);
  EXPECT_EQ(pool_->SelfView(kSelfLen).k.size(1), 1);
  EXPECT_EQ(pool_->CrossView(kCrossLen).k.size(1), 1);

  pool_->Free({0}, {0}, kSelfLen, kCrossLen);
  EXPECT_EQ(pool_->bytes_in_use(), 0);
}

TEST_F(KvPoolTest, ReorderCopiesOnlyChangedRowsAndTheGivenPositions) {
  const std::vector<int64_t> rows = pool_->Allocate(3);
  for (int64_t r = 0; r < 3; ++r) FillSelf(r, static_cast<float>(r + 1));
  // Beam 0 continues old beam 1, beam 1 old beam 1, beam 2 old beam 0; 2 positions written.
  pool_->Reorder(rows, {1, 1, 0}, /*shared=*/{0, 2, 0}, /*self_len=*/2);
  EXPECT_EQ(Self(0, 0), 2.0f);
  EXPECT_EQ(Self(0, 1), 2.0f);
  EXPECT_EQ(Self(1, 1), 2.0f);
  EXPECT_EQ(Self(2, 0), 1.0f);
  EXPECT_EQ(Self(2, 1), 1.0f);
  EXPECT_EQ(pool_->SelfView(kSelfLen).v[0][2][0][1][0].item<float>(), -1.0f);
  // Positions past self_len are left alone.
  EXPECT_EQ(Self(0, 2), 1.0f);
  EXPECT_EQ(Self(2, 3), 3.0f);
}

TEST_F(KvPoolTest, ReorderKeepsSharedPositionsAndStagesSourcesThatAreOverwritten) {
  const std::vector<int64_t> rows = pool_->Allocate(4);
  for (int64_t r = 0; r < 4; ++r) FillSelf(r, static_cast<float>(r + 1));
  // A cycle 0 <- 1 <- 2 <- 0 (every source is overwritten too), row 3 <- row 1,
  // each target sharing a different number of leading positions with its source.
  pool_->Reorder(rows, {1, 2, 0, 1}, /*shared=*/{2, 1, 3, 0}, /*self_len=*/kSelfLen);
  auto k_row = [&](int64_t r) {
    std::vector<float> out;
    for (int64_t p = 0; p < kSelfLen; ++p) out.push_back(Self(r, p));
    return out;
  };
  EXPECT_THAT(k_row(0), ElementsAre(1, 1, 2, 2));  // kept 2, then old row 1
  EXPECT_THAT(k_row(1), ElementsAre(2, 3, 3, 3));  // kept 1, then old row 2
  EXPECT_THAT(k_row(2), ElementsAre(3, 3, 3, 1));  // kept 3, then old row 0
  EXPECT_THAT(k_row(3), ElementsAre(2, 2, 2, 2));  // all of old row 1, read before row 1 changed
  EXPECT_EQ(pool_->SelfView(kSelfLen).v[0][1][0][2][1].item<float>(), -3.0f);
  // A target that shares every written position is not touched.
  FillSelf(0, 9.0f);
  pool_->Reorder(rows, {3, 1, 2, 3}, /*shared=*/{kSelfLen, 0, 0, 0}, kSelfLen);
  EXPECT_THAT(k_row(0), ElementsAre(9, 9, 9, 9));
}

}  // namespace
}  // namespace florence::batching
