#include "batching/kv_pool.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace florence::batching {

using engine::KvPair;

absl::StatusOr<std::unique_ptr<KvPool>> KvPool::Create(
    engine::ModelBackend& model, const Shape& shape, int64_t budget_bytes,
    int max_rows) {
  c10::InferenceMode guard;
  // Element size from the model: a one-row, one-position probe cache.
  FLORENCE_ASSIGN_OR_RETURN(KvPair probe, model.EmptySelfCache(1, 1));
  const int64_t elem = probe.k.element_size();
  const int64_t per_position = 2 * shape.layers * shape.heads * shape.head_dim * elem;
  const int64_t self_row_bytes = per_position * shape.self_len;
  const int64_t cross_row_bytes = per_position * shape.cross_len;
  const int64_t row_bytes = self_row_bytes + cross_row_bytes;
  const int64_t by_budget = row_bytes > 0 ? budget_bytes / row_bytes : 0;
  const int capacity = static_cast<int>(std::min<int64_t>(max_rows, by_budget));
  if (capacity < 1) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the KV-cache budget of ", budget_bytes, " bytes holds no sequence: one row (",
        shape.self_len, " decoder + ", shape.cross_len, " encoder positions) takes ",
        row_bytes, " bytes; raise --kv_cache_bytes"));
  }
  try {
    FLORENCE_ASSIGN_OR_RETURN(KvPair self, model.EmptySelfCache(capacity, shape.self_len));
    const auto opts = probe.k.options();
    KvPair cross{
        at::zeros({shape.layers, capacity, shape.heads, shape.cross_len, shape.head_dim}, opts),
        at::zeros({shape.layers, capacity, shape.heads, shape.cross_len, shape.head_dim}, opts)};
    at::Tensor mask = at::zeros({capacity, shape.cross_len}, opts.dtype(at::kLong));
    return std::unique_ptr<KvPool>(new KvPool(shape, capacity, self_row_bytes, cross_row_bytes,
                                              std::move(self), std::move(cross), std::move(mask)));
  } catch (const c10::Error& e) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "allocating the KV-cache pool (", capacity, " rows of ", row_bytes,
        " bytes) failed: ", e.what_without_backtrace()));
  }
}

KvPool::KvPool(Shape shape, int capacity, int64_t self_row_bytes, int64_t cross_row_bytes,
               KvPair self, KvPair cross, at::Tensor mask)
    : shape_(shape),
      capacity_(capacity),
      self_row_bytes_(self_row_bytes),
      cross_row_bytes_(cross_row_bytes),
      self_(std::move(self)),
      cross_(std::move(cross)),
      mask_(std::move(mask)) {}

std::vector<int64_t> KvPool::Allocate(int n) {
  std::vector<int64_t> rows;
  for (int i = 0; i < n && used_self_ < capacity_; ++i) rows.push_back(used_self_++);
  return rows;
}

int64_t KvPool::AllocateCross() {
  TORCH_CHECK(used_cross_ < capacity_, "KvPool: no free cross row");
  return used_cross_++;
}

namespace {

// Frees `rows` out of the dense prefix [0, *used): the live rows past the new
// end move into the holes below it. Returns the (from, to) moves.
std::vector<std::pair<int64_t, int64_t>> Compact(const std::vector<int64_t>& rows, int* used) {
  std::vector<bool> freed(*used, false);
  for (int64_t r : rows) freed[r] = true;
  const int64_t new_used = *used - static_cast<int64_t>(rows.size());
  std::vector<int64_t> holes;  // freed rows inside the new dense prefix
  for (int64_t r = 0; r < new_used; ++r) {
    if (freed[r]) holes.push_back(r);
  }
  std::vector<std::pair<int64_t, int64_t>> moves;
  size_t next_hole = 0;
  for (int64_t r = new_used; r < *used; ++r) {
    if (!freed[r]) moves.emplace_back(r, holes[next_hole++]);
  }
  *used = static_cast<int>(new_used);
  return moves;
}

// Copies row `from` of dimension 1 to row `to`, the first `len` positions of
// dimension 3 (or of dimension 1 of a 2-D mask).
void CopyRow(const at::Tensor& t, int64_t from, int64_t to, int64_t len) {
  const int64_t pos_dim = t.dim() == 2 ? 1 : 3;
  const int64_t row_dim = t.dim() == 2 ? 0 : 1;
  at::Tensor v = t.narrow(pos_dim, 0, len);
  v.select(row_dim, to).copy_(v.select(row_dim, from));
}

}  // namespace

KvPool::Moves KvPool::Free(const std::vector<int64_t>& self_rows,
                           const std::vector<int64_t>& cross_rows, int64_t self_len,
                           int64_t cross_len) {
  c10::InferenceMode guard;
  Moves moves{Compact(self_rows, &used_self_), Compact(cross_rows, &used_cross_)};
  for (const auto& [from, to] : moves.self) {
    CopyRow(self_.k, from, to, self_len);
    CopyRow(self_.v, from, to, self_len);
  }
  for (const auto& [from, to] : moves.cross) {
    CopyRow(cross_.k, from, to, cross_len);
    CopyRow(cross_.v, from, to, cross_len);
    CopyRow(mask_, from, to, mask_.size(1));
  }
  return moves;
}

void KvPool::WriteCross(int64_t row, const KvPair& cross, int64_t index, int64_t len,
                        const at::Tensor& mask) {
  c10::InferenceMode guard;
  cross_.k.select(1, row).narrow(2, 0, len).copy_(cross.k.select(1, index).narrow(2, 0, len));
  cross_.v.select(1, row).narrow(2, 0, len).copy_(cross.v.select(1, index).narrow(2, 0, len));
  at::Tensor m = mask_.select(0, row);
  m.zero_();
  m.narrow(0, 0, len).copy_(mask.narrow(0, 0, len));
}

void KvPool::Reorder(const std::vector<int64_t>& rows, const std::vector<int64_t>& sources,
                     const std::vector<int64_t>& shared, int64_t self_len) {
  c10::InferenceMode guard;
  // Row j is written iff its source differs and it keeps fewer than self_len
  // positions; it is written one row at a time (an index_select over the pool
  // view would first copy every row). A source that is itself written is
  // staged first, from the earliest position any of its readers needs.
  const size_t n = rows.size();
  std::vector<int64_t> from(n, self_len);  // first position row j copies
  for (size_t j = 0; j < n; ++j) {
    if (sources[j] != static_cast<int64_t>(j)) from[j] = std::min(shared[j], self_len);
  }
  std::vector<int64_t> stage_from(n, self_len);  // per source: first staged position
  for (size_t j = 0; j < n; ++j) {
    const int64_t src = sources[j];
    if (from[j] < self_len && from[src] < self_len) {
      stage_from[src] = std::min(stage_from[src], from[j]);
    }
  }
  std::vector<int64_t> slot_of(n, -1);  // source index -> scratch slot
  int64_t slots = 0;
  for (size_t s = 0; s < n; ++s) {
    if (stage_from[s] < self_len) slot_of[s] = slots++;
  }
  if (slots > 0 && (!scratch_.defined() || scratch_.size(1) < slots)) {
    scratch_ = at::empty({2, std::max<int64_t>(slots, 4), shape_.layers, shape_.heads,
                          shape_.self_len, shape_.head_dim},
                         self_.k.options());
  }
  const at::Tensor* caches[2] = {&self_.k, &self_.v};
  for (int kv = 0; kv < 2; ++kv) {
    const at::Tensor& cache = *caches[kv];
    auto span = [&](const at::Tensor& row, int64_t first) {
      return row.narrow(2, first, self_len - first);
    };
    for (size_t s = 0; s < n; ++s) {
      if (slot_of[s] < 0) continue;
      span(scratch_[kv][slot_of[s]], stage_from[s])
          .copy_(span(cache.select(1, rows[s]), stage_from[s]));
    }
    for (size_t j = 0; j < n; ++j) {
      if (from[j] >= self_len) continue;
      const int64_t src = sources[j];
      const at::Tensor source =
          slot_of[src] >= 0 ? scratch_[kv][slot_of[src]] : cache.select(1, rows[src]);
      span(cache.select(1, rows[j]), from[j]).copy_(span(source, from[j]));
    }
  }
}

KvPair KvPool::SelfView(int64_t self_len) const {
  return {self_.k.narrow(1, 0, used_self_).narrow(3, 0, self_len),
          self_.v.narrow(1, 0, used_self_).narrow(3, 0, self_len)};
}

KvPair KvPool::CrossView(int64_t cross_len) const {
  return {cross_.k.narrow(1, 0, used_cross_).narrow(3, 0, cross_len),
          cross_.v.narrow(1, 0, used_cross_).narrow(3, 0, cross_len)};
}

at::Tensor KvPool::MaskView(int64_t cross_len) const {
  return mask_.narrow(0, 0, used_cross_).narrow(1, 0, cross_len);
}

}  // namespace florence::batching
