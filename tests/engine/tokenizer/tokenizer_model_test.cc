// The real Florence-2 tokenizer.json (exported tiny model) against reference
// vectors from HF `tokenizers` and transformers' Florence2Processor, written by
// tools/tokenizer_vectors.py (CTest setup test setup.tokenizer_vectors).
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/task.h"
#include "engine/tokenizer/prompt.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode_classes.h"
#include "engine/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/test_data.h"

namespace florence::engine {
namespace {

using Json = nlohmann::json;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::string VectorsPath() {
  return testdata::EnvOr("FLORENCE_TOKENIZER_VECTORS",
                         FLORENCE_TOKENIZER_VECTORS_DEFAULT);
}
std::string TokenizerPath() {
  return testdata::TestModelDir() + "/tokenizer.json";
}

struct Vectors {
  Json classes;  // the one "classes" record
  std::vector<Json> text, decode, region, prompt;
};

// Loaded once for the whole binary; null (with the test failing) if missing.
class FlorenceTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tok = Tokenizer::FromFile(TokenizerPath());
    if (tok.ok()) {
      tokenizer_ = std::move(tok).value().release();
    } else {
      load_error_ = new std::string(tok.status().ToString());
    }
    std::ifstream in(VectorsPath());
    if (!in) return;
    vectors_ = new Vectors;
    std::string line;
    while (std::getline(in, line)) {
      Json j = Json::parse(line);
      const std::string kind = j.at("kind");
      if (kind == "classes") {
        vectors_->classes = std::move(j);
        continue;
      }
      (kind == "text"     ? vectors_->text
       : kind == "decode" ? vectors_->decode
       : kind == "region" ? vectors_->region
                          : vectors_->prompt)
          .push_back(std::move(j));
    }
  }
  void SetUp() override {
    ASSERT_NE(tokenizer_, nullptr) << (load_error_ ? *load_error_ : "");
  }
  const Vectors& V() {
    static const Vectors empty;
    EXPECT_NE(vectors_, nullptr)
        << "no vectors at " << VectorsPath()
        << " (made by the setup.tokenizer_vectors CTest test)";
    return vectors_ ? *vectors_ : empty;
  }
  static const Tokenizer& T() { return *tokenizer_; }

  static inline const Tokenizer* tokenizer_ = nullptr;
  static inline const std::string* load_error_ = nullptr;
  static inline Vectors* vectors_ = nullptr;
};

std::string Show(const std::string& s) {
  return "\"" + absl::Utf8SafeCHexEscape(s) + "\"";
}
std::string Show(const std::vector<int32_t>& ids) {
  return "[" + absl::StrJoin(ids, ", ") + "]";
}

constexpr int kMaxReported = 10;  // mismatches printed per test

TEST_F(FlorenceTokenizer, VocabularyLayout) {
  EXPECT_EQ(T().vocab_size(), 51290);  // 51289 + native <image>
  const std::vector<std::pair<std::string, int32_t>> expected = {
      {"<s>", 0},
      {"<pad>", 1},
      {"</s>", 2},
      {"<unk>", 3},
      {".", 4},
      {"\xC4\xA0the", 5},
      {"<mask>", 50264},
      {"<od>", 50265},
      {"</ocr>", 50268},
      {"<loc_0>", 50269},
      {"<loc_999>", 51268},
      {"<cap>", 51269},
      {"<sep>", 51279},
      {"<region_to_desciption>", 51282},
      {"<poly>", 51286},
      {"<and>", 51288},
      {"<image>", 51289}};
  for (const auto& [token, id] : expected) {
    EXPECT_EQ(T().TokenToId(token), id) << token;
    EXPECT_EQ(T().IdToToken(id), token) << id;
  }
  EXPECT_TRUE(T().IsSpecial(50269));
  EXPECT_FALSE(T().IsSpecial(5));
}

// FLORENCE2.md 2.4: ids after the 577 image tokens in transformers' tests.
TEST_F(FlorenceTokenizer, GoldenPromptIds) {
  struct Golden {
    Task task;
    const char* text;
    std::vector<int32_t> ids;
  };
  const Golden golden[] = {
      {Task::kCaption, "", {0, 2264, 473, 5, 2274, 6190, 116, 2}},
      {Task::kDetailedCaption,
       "",
       {0, 47066, 21700, 11, 4617, 99, 16, 2343, 11, 5, 2274, 4, 2}},
      {Task::kObjectDetection,
       "",
       {0, 574, 22486, 5, 8720, 19, 4120, 766, 11, 5, 2274, 4, 2}},
      {Task::kOcr, "", {0, 2264, 16, 5, 2788, 11, 5, 2274, 116, 2}},
      {Task::kOcrWithRegion,
       "",
       {0, 2264, 16, 5, 2788, 11, 5, 2274, 6, 19, 3806, 116, 2}},
      {Task::kRegionProposal,
       "",
       {0, 574, 22486, 5, 976, 5327, 11, 5, 2274, 4, 2}},
      {Task::kOpenVocabularyDetection,
       "wheels",
       {0, 574, 22486, 10562, 11, 5, 2274, 4, 2}},
      {Task::kOpenVocabularyDetection,
       "car",
       {0, 574, 22486, 512, 11, 5, 2274, 4, 2}},
      {Task::kReferringExpressionSegmentation,
       "a car",
       {0, 574, 22486, 10, 512, 11, 5, 2274, 19, 11445, 2}},
  };
  for (const Golden& g : golden) {
    auto ids = EncodePrompt(T(), g.task, g.text, std::nullopt, 640, 480, 1024);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_THAT(*ids, ElementsAreArray(g.ids))
        << SpecOf(g.task).token << g.text;
  }
}

// The pre-tokenizer's \p{L} / \p{N} / \s, for every code point, against the
// classification probed from the installed HF tokenizers. Fails if a
// `tokenizers` upgrade brings an Oniguruma with another Unicode version:
// regenerate engine/tokenizer/unicode_classes.cc then.
TEST_F(FlorenceTokenizer, CharacterClassesMatchReferenceForEveryCodePoint) {
  const Json& classes = V().classes;
  ASSERT_TRUE(classes.is_object())
      << "no \"classes\" record in " << VectorsPath();
  std::vector<char> want(0x110000, 'O');
  for (const char* name : {"L", "N", "WS"}) {
    for (const Json& range : classes.at(name)) {
      for (uint32_t c = range[0]; c <= range[1].get<uint32_t>(); ++c)
        want[c] = name[0];
    }
  }
  int bad = 0;
  for (char32_t c = 0; c < 0x110000; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    const char got = unicode::IsLetter(c)    ? 'L'
                     : unicode::IsNumber(c)  ? 'N'
                     : utf8::IsWhiteSpace(c) ? 'W'
                                             : 'O';
    if (got != want[c] && ++bad <= kMaxReported) {
      ADD_FAILURE() << "U+"
                    << absl::StrCat(
                           absl::Hex(static_cast<uint32_t>(c), absl::kZeroPad4))
                    << ": class " << got << ", reference " << want[c];
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST_F(FlorenceTokenizer, EncodeAndDecodeMatchHfTokenizersOnAllStrings) {
  const Vectors& v = V();
  EXPECT_GE(v.text.size(), 10000u);
  int encode_bad = 0, decode_bad = 0, skip_bad = 0;
  for (const Json& rec : v.text) {
    const std::string text = rec.at("text");
    const std::vector<int32_t> want = rec.at("ids");
    const std::vector<int32_t> got =
        T().Encode(text, /*add_special_tokens=*/false);
    if (got != want && ++encode_bad <= kMaxReported) {
      ADD_FAILURE() << "Encode(" << Show(text) << ")\n  got  " << Show(got)
                    << "\n  want " << Show(want);
    }
    const std::string decoded = T().Decode(want, /*skip_special_tokens=*/false);
    if (decoded != rec.at("decoded").get<std::string>() &&
        ++decode_bad <= kMaxReported) {
      ADD_FAILURE() << "Decode(" << Show(want) << ") = " << Show(decoded)
                    << ", want " << Show(rec.at("decoded").get<std::string>());
    }
    const std::string skipped = T().Decode(want, /*skip_special_tokens=*/true);
    if (skipped != rec.at("decoded_skip").get<std::string>() &&
        ++skip_bad <= kMaxReported) {
      ADD_FAILURE() << "Decode(" << Show(want) << ", skip) = " << Show(skipped)
                    << ", want "
                    << Show(rec.at("decoded_skip").get<std::string>());
    }
  }
  EXPECT_EQ(encode_bad, 0) << "of " << v.text.size() << " strings";
  EXPECT_EQ(decode_bad, 0);
  EXPECT_EQ(skip_bad, 0);
}

TEST_F(FlorenceTokenizer, AddSpecialTokensWrapsInBosEos) {
  for (size_t i = 0; i < V().text.size(); i += 97) {
    const std::string text = V().text[i].at("text");
    std::vector<int32_t> want = {0};
    for (int32_t id : V().text[i].at("ids")) want.push_back(id);
    want.push_back(2);
    EXPECT_EQ(T().Encode(text, true), want) << Show(text);
  }
}

TEST_F(FlorenceTokenizer, DecodeOfArbitraryIdsMatchesHf) {
  const Vectors& v = V();
  EXPECT_GE(v.decode.size(), 1000u);
  int bad = 0;
  for (const Json& rec : v.decode) {
    const std::vector<int32_t> ids = rec.at("ids");
    for (bool skip : {false, true}) {
      const std::string want = rec.at(skip ? "decoded_skip" : "decoded");
      const std::string got = T().Decode(ids, skip);
      if (got != want && ++bad <= kMaxReported) {
        ADD_FAILURE() << "Decode(" << Show(ids) << ", skip=" << skip
                      << ") = " << Show(got) << ", want " << Show(want);
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST_F(FlorenceTokenizer, QuantizeMatchesProcessorQuantize) {
  const Vectors& v = V();
  EXPECT_GE(v.region.size(), 500u);
  int bad = 0;
  for (const Json& rec : v.region) {
    const std::vector<double> b = rec.at("box");
    const int w = rec.at("width"), h = rec.at("height");
    const std::array<int, 4> want = rec.at("loc");
    auto got = QuantizeBox(RegionBox{b[0], b[1], b[2], b[3]}, w, h);
    if ((!got.ok() || *got != want) && ++bad <= kMaxReported) {
      ADD_FAILURE() << "QuantizeBox(" << rec.at("box").dump() << ", " << w
                    << "x" << h << ") = "
                    << (got.ok() ? Json(*got).dump() : got.status().ToString())
                    << ", want " << Json(want).dump();
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST_F(FlorenceTokenizer, PromptIdsMatchFlorence2ProcessorForEveryTask) {
  const Vectors& v = V();
  std::set<std::string> tasks_seen;
  int bad = 0;
  for (const Json& rec : v.prompt) {
    const std::string token = rec.at("task");
    const std::optional<Task> task = TaskFromToken(token);
    ASSERT_TRUE(task.has_value()) << token;
    tasks_seen.insert(token);
    std::optional<RegionBox> box;
    if (!rec.at("box").is_null()) {
      const std::vector<double> b = rec.at("box");
      box = RegionBox{b[0], b[1], b[2], b[3]};
    }
    const std::string text = rec.at("text");
    const int w = rec.at("width"), h = rec.at("height");
    auto prompt = BuildPrompt(*task, text, box, w, h);
    auto ids = EncodePrompt(T(), *task, text, box, w, h, 4096);
    const std::vector<int32_t> want = rec.at("ids");
    if ((!prompt.ok() || *prompt != rec.at("prompt").get<std::string>() ||
         !ids.ok() || *ids != want) &&
        ++bad <= kMaxReported) {
      ADD_FAILURE() << token << " " << Show(text) << " box "
                    << rec.at("box").dump() << " on " << w << "x" << h
                    << "\n  prompt "
                    << (prompt.ok() ? Show(*prompt)
                                    : prompt.status().ToString())
                    << "\n  want   "
                    << Show(rec.at("prompt").get<std::string>())
                    << "\n  ids    "
                    << (ids.ok() ? Show(*ids) : ids.status().ToString())
                    << "\n  want   " << Show(want);
    }
  }
  EXPECT_EQ(bad, 0) << "of " << v.prompt.size() << " prompts";
  EXPECT_EQ(tasks_seen.size(), kTaskSpecs.size());
}

TEST_F(FlorenceTokenizer, PromptLengthLimit) {
  // "Locate " + 500 x " car" + " in the image.": each " car" is one token.
  std::string text;
  for (int i = 0; i < 500; ++i) absl::StrAppend(&text, " car");
  auto ok = EncodePrompt(T(), Task::kOpenVocabularyDetection, text,
                         std::nullopt, 640, 480, 4096);
  ASSERT_TRUE(ok.ok()) << ok.status();
  const int n = static_cast<int>(ok->size());
  EXPECT_EQ(n, 508);  // <s> Loc ate (car x 500) in the image . </s>
  EXPECT_TRUE(EncodePrompt(T(), Task::kOpenVocabularyDetection, text,
                           std::nullopt, 640, 480, 577 + n)
                  .ok());
  auto over = EncodePrompt(T(), Task::kOpenVocabularyDetection, text,
                           std::nullopt, 640, 480, 1024);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      over.status().message(),
      HasSubstr(absl::StrCat(
          "is ", n,
          " tokens (with <s> and </s>); with the 577 image tokens that is ",
          577 + n, ", ", 577 + n - 1024,
          " tokens over the model's limit of 1024")));
}

TEST_F(FlorenceTokenizer, ConcurrentEncodeDecodeAgree) {
  const Vectors& v = V();
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < v.text.size();
           i += 2) {  // overlapping halves share cache entries
        const std::vector<int32_t> want = v.text[i].at("ids");
        if (T().Encode(v.text[i].at("text").get<std::string>(), false) !=
                want ||
            T().Decode(want, false) !=
                v.text[i].at("decoded").get<std::string>()) {
          ++bad[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(bad, ::testing::Each(0));
}

TEST_F(FlorenceTokenizer, LegacyMergesFormatLoadsIdentically) {
  std::ifstream in(TokenizerPath(), std::ios::binary);
  Json doc = Json::parse(in);
  for (Json& merge : doc["model"]["merges"]) {
    if (merge.is_array())
      merge = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
  }
  auto legacy = Tokenizer::FromJson(doc.dump(), "legacy tokenizer.json");
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  for (size_t i = 0; i < V().text.size(); i += 7) {
    const std::string text = V().text[i].at("text");
    EXPECT_EQ((*legacy)->Encode(text, false),
              V().text[i].at("ids").get<std::vector<int32_t>>())
        << Show(text);
  }
}

TEST_F(FlorenceTokenizer, TruncatedCopyIsRefused) {
  std::ifstream in(TokenizerPath(), std::ios::binary);
  const std::string full((std::istreambuf_iterator<char>(in)),
                         std::istreambuf_iterator<char>());
  const std::string path = ::testing::TempDir() + "/truncated_tokenizer.json";
  std::ofstream(path, std::ios::binary) << full.substr(0, full.size() * 2 / 3);
  auto tok = Tokenizer::FromFile(path);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr(path + " is not valid JSON"));
}

}  // namespace
}  // namespace florence::engine
