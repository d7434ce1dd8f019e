// C++ greedy and beam search on TorchScriptModel vs transformers' generate()
// on the same weights (tools/generation_vectors.py): identical tokens, and the
// beam sequence score within 1e-4. The vectors cover the tiny model and an
// EOS-prone copy of it whose sequences stop at varied lengths (early
// stopping, finished-beam bookkeeping, forced EOS).
#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/generation/generate.h"
#include "engine/generation/search.h"
#include "engine/model_dir.h"
#include "engine/torchscript_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/test_data.h"

namespace florence::engine {
namespace {

using ::testing::HasSubstr;

std::string GenerationDir() {
  return testdata::EnvOr("FLORENCE_TEST_GENERATION_DIR",
                         FLORENCE_TEST_GENERATION_DIR_DEFAULT);
}

std::unique_ptr<TorchScriptModel> LoadModel(const std::string& path) {
  absl::StatusOr<ModelDir> dir = LoadModelDir(path);
  EXPECT_TRUE(dir.ok()) << dir.status();
  if (!dir.ok()) return nullptr;
  auto model = TorchScriptModel::Create(*dir, {});
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

std::vector<int64_t> ToVector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(),
                              c.data_ptr<int64_t>() + c.numel());
}

TEST(SearchTest, MatchesTransformersGenerateTokenForToken) {
  std::map<std::string, at::Tensor> v;
  torch::jit::Module bundle = torch::jit::load(GenerationDir() + "/vectors.pt");
  for (const auto& b : bundle.named_buffers()) v[b.name] = b.value;
  std::vector<std::unique_ptr<TorchScriptModel>> models;
  models.push_back(LoadModel(testdata::TestModelDir()));
  models.push_back(LoadModel(GenerationDir() + "/eos_model"));
  ASSERT_TRUE(models[0] && models[1]);

  const int64_t cases = v.at("num_cases").item<int64_t>();
  ASSERT_GE(cases, 10);
  std::set<size_t> lengths;
  for (int64_t i = 0; i < cases; ++i) {
    const std::string key = "case" + std::to_string(i);
    const std::vector<int64_t> meta = ToVector(v.at(key + "_meta"));
    SearchParams params;
    params.num_beams = static_cast<int>(meta[2]);
    params.max_new_tokens = static_cast<int>(meta[3]);
    params.no_repeat_ngram_size = static_cast<int>(meta[4]);
    absl::StatusOr<SearchResult> result = GenerateOne(
        *models[meta[0]], v.at("image" + std::to_string(meta[1])),
        v.at(key + "_input_ids"), params);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->tokens, ToVector(v.at(key + "_expected"))) << key;
    EXPECT_EQ(result->token_logprobs.size(), result->tokens.size() - 1);
    for (float lp : result->token_logprobs) EXPECT_LE(lp, 0.0f) << key;
    if (params.num_beams > 1) {
      EXPECT_NEAR(result->sequence_score, v.at(key + "_score").item<float>(),
                  1e-4)
          << key;
    }
    lengths.insert(result->tokens.size());
  }
  // The vectors must reach both the length limit and several early stops.
  EXPECT_GE(lengths.size(), 4u);
}

TEST(SearchTest, BeamReorderSourcesStayWithinTheRequest) {
  SearchParams params;
  params.num_beams = 3;
  params.max_new_tokens = 6;
  auto search = Search::Create(params);
  ASSERT_TRUE(search.ok());
  at::manual_seed(0);
  while (!(*search)->done()) {
    EXPECT_EQ((*search)->last_tokens().size(), 3u);
    const std::vector<int64_t> sources =
        (*search)->Advance(at::randn({3, 100}));
    ASSERT_EQ(sources.size(), 3u);
    for (int64_t s : sources) EXPECT_TRUE(s >= 0 && s < 3);
  }
  const SearchResult r = (*search)->result();
  EXPECT_EQ(r.tokens.front(), 2);
  EXPECT_EQ(r.tokens[1], 0);      // forced BOS
  EXPECT_EQ(r.tokens.back(), 2);  // forced EOS at the last allowed step
  EXPECT_LE(r.tokens.size(), 7u);
}

// The cache positions a reordered row keeps are exactly the token prefix its
// old hypothesis shares with the one it continues (histories rebuilt here from
// last_tokens() and the sources alone).
TEST(SearchTest, SharedPositionsAreTheTokenPrefixSharedWithTheSource) {
  SearchParams params;
  params.num_beams = 4;
  params.max_new_tokens = 24;
  params.min_new_tokens = 24;
  auto search = Search::Create(params);
  ASSERT_TRUE(search.ok());
  at::manual_seed(3);
  std::vector<std::vector<int64_t>> hist(4, std::vector<int64_t>{2});
  int partial = 0;  // moved rows that keep some but not all positions
  while (!(*search)->done()) {
    const std::vector<int64_t> sources = (*search)->Advance(at::randn({4, 12}) * 3);
    const std::vector<int64_t> shared = (*search)->shared_positions();
    const std::vector<int64_t> last = (*search)->last_tokens();
    ASSERT_EQ(shared.size(), 4u);
    std::vector<std::vector<int64_t>> next(4);
    for (size_t r = 0; r < 4; ++r) {
      const std::vector<int64_t>& mine = hist[r];
      const std::vector<int64_t>& theirs = hist[sources[r]];
      int64_t common = 0;
      while (common < static_cast<int64_t>(mine.size()) && mine[common] == theirs[common]) ++common;
      EXPECT_EQ(shared[r], common) << "row " << r << " at length " << mine.size();
      partial += common > 0 && common < static_cast<int64_t>(mine.size());
      next[r] = theirs;
      next[r].push_back(last[r]);
    }
    hist = next;
  }
  EXPECT_GT(partial, 5);
}

TEST(SearchTest, RejectsBadParameters) {
  SearchParams p;
  p.num_beams = 0;
  EXPECT_THAT(Search::Create(p).status().message(), HasSubstr("num_beams"));
  p = SearchParams();
  p.max_new_tokens = 0;
  EXPECT_EQ(Search::Create(p).status().code(),
            absl::StatusCode::kInvalidArgument);
  p = SearchParams();
  p.min_new_tokens = 2000;
  EXPECT_THAT(Search::Create(p).status().message(),
              HasSubstr("min_new_tokens"));
}

}  // namespace
}  // namespace florence::engine
