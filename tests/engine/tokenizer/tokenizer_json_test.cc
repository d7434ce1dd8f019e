// The tokenizer on small hand-made tokenizer.json documents: BPE merge order,
// both merges formats, added-token splitting, decoding, and the errors for
// missing, corrupt or unsupported files.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace florence::engine {
namespace {

using Json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Byte-level alphabet: printable ASCII is itself, ' ' is "Ġ" (U+0120).
Json MiniTokenizer(bool legacy_merges = false) {
  Json vocab = {{"<s>", 0},
                {"<pad>", 1},
                {"</s>", 2},
                {"<unk>", 3},
                {"a", 4},
                {"b", 5},
                {"c", 6},
                {"\xC4\xA0", 7},
                {"ab", 8},
                {"abc", 9},
                {"\xC4\xA0"
                 "a",
                 10},
                {"bc", 11},
                {"<", 12},
                {">", 13},
                {"x", 14}};
  Json merges = Json::array();
  for (auto [l, r] : std::vector<std::pair<std::string, std::string>>{
           {"a", "b"}, {"ab", "c"}, {"\xC4\xA0", "a"}, {"b", "c"}}) {
    merges.push_back(legacy_merges ? Json(l + " " + r) : Json::array({l, r}));
  }
  auto added = [](int id, const char* content, bool special, bool normalized,
                  bool lstrip) {
    return Json{
        {"id", id},          {"content", content}, {"single_word", false},
        {"lstrip", lstrip},  {"rstrip", false},    {"normalized", normalized},
        {"special", special}};
  };
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       {added(0, "<s>", true, true, false), added(2, "</s>", true, true, false),
        added(15, "<x>", true, false, false),
        added(16, "<xy>", true, false, false),
        added(17, "<m>", true, false, true),
        added(18, "plain", false, false, false)}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"post_processor",
       {{"type", "RobertaProcessing"},
        {"sep", {"</s>", 2}},
        {"cls", {"<s>", 0}},
        {"trim_offsets", true},
        {"add_prefix_space", false}}},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merges}}},
  };
}

std::unique_ptr<Tokenizer> Load(const Json& json) {
  auto tokenizer = Tokenizer::FromJson(json.dump(), "mini.json");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

std::string WriteTemp(const std::string& name, const std::string& contents) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

TEST(TokenizerJson, BpeMergesInRankOrder) {
  auto tok = Load(MiniTokenizer());
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("abc", false),
              ElementsAre(9));  // ab (rank 0) before bc (rank 3)
  EXPECT_THAT(tok->Encode(" abc", false),
              ElementsAre(7, 9));  // ab, then ab+c; Ġ+ab is no merge
  EXPECT_THAT(tok->Encode("bc", false), ElementsAre(11));
  EXPECT_THAT(tok->Encode("abc", true), ElementsAre(0, 9, 2));
  EXPECT_THAT(tok->Encode("", true), ElementsAre(0, 2));
  EXPECT_THAT(tok->Encode("", false), ElementsAre());
  EXPECT_THAT(
      tok->Encode("aqa", false),
      ElementsAre(4, 4));  // bytes without a token vanish (no unk_token)
}

TEST(TokenizerJson, LegacyStringMergesGiveTheSameIds) {
  auto pairs = Load(MiniTokenizer(false));
  auto strings = Load(MiniTokenizer(true));
  ASSERT_NE(pairs, nullptr);
  ASSERT_NE(strings, nullptr);
  for (const char* text : {"abc", " abc", "bcab abc", "a<x>bc"}) {
    EXPECT_EQ(pairs->Encode(text, true), strings->Encode(text, true)) << text;
  }
}

TEST(TokenizerJson, AddedTokensSplitLeftmostLongest) {
  auto tok = Load(MiniTokenizer());
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("a<xy>b", false), ElementsAre(4, 16, 5));
  EXPECT_THAT(tok->Encode("<x><xy><x", false), ElementsAre(15, 16, 12, 14));
  EXPECT_THAT(tok->Encode("<s>abc</s>", false), ElementsAre(0, 9, 2));
  // lstrip: whitespace before <m> is swallowed, the token decodes without it.
  EXPECT_THAT(tok->Encode("a  <m>b", false), ElementsAre(4, 17, 5));
  EXPECT_EQ(tok->Decode(tok->Encode("a  <m>b", false), false), "a<m>b");
  // Non-special added tokens survive skip_special_tokens.
  EXPECT_THAT(tok->Encode("xplainx", false), ElementsAre(14, 18, 14));
  EXPECT_EQ(tok->Decode({0, 14, 18, 15, 2}, true), "xplain");
}

TEST(TokenizerJson, DecodeSkipsUnknownIdsAndRepairsUtf8) {
  auto tok = Load(MiniTokenizer());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Decode({0, 7, 9, -5, 1000, 2}, false), "<s> abc</s>");
  EXPECT_EQ(tok->Decode({0, 7, 9, 2}, true), " abc");
  EXPECT_EQ(tok->vocab_size(), 19);
  EXPECT_EQ(tok->TokenToId("<xy>"), 16);
  EXPECT_EQ(tok->TokenToId("\xC4\xA0"
                           "a"),
            10);
  EXPECT_EQ(tok->TokenToId("zz"), std::nullopt);
  EXPECT_EQ(tok->IdToToken(7), "\xC4\xA0");
  EXPECT_TRUE(tok->IsSpecial(0));
  EXPECT_FALSE(tok->IsSpecial(18));
  // Invalid UTF-8 input is encoded as U+FFFD (whose bytes have no tokens here).
  EXPECT_THAT(tok->Encode("a\xFF"
                          "b",
                          false),
              ElementsAre(4, 5));
}

TEST(TokenizerJson, MissingFileIsNotFound) {
  const std::string path = ::testing::TempDir() + "/no/such/tokenizer.json";
  auto tok = Tokenizer::FromFile(path);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr(path));
}

TEST(TokenizerJson, CorruptFileIsInvalidArgumentNamingIt) {
  const std::string full = MiniTokenizer().dump();
  for (const std::string& contents :
       {std::string("{not json"), full.substr(0, full.size() / 2),
        std::string(""), std::string("\x00\x01\x02", 3)}) {
    const std::string path = WriteTemp("corrupt_tokenizer.json", contents);
    auto tok = Tokenizer::FromFile(path);
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument)
        << tok.status();
    EXPECT_THAT(tok.status().message(), HasSubstr(path));
    EXPECT_THAT(tok.status().message(), HasSubstr("not valid JSON"));
  }
  auto array = Tokenizer::FromJson("[1, 2]", "x.json");
  EXPECT_EQ(array.status().code(), absl::StatusCode::kInvalidArgument);
}

// A mutation of the mini tokenizer and the error it must give.
struct BadCase {
  const char* name;
  void (*mutate)(Json&);
  absl::StatusCode code;
  const char* message;
};

TEST(TokenizerJson, InconsistentOrUnsupportedFilesAreRefused) {
  const BadCase cases[] = {
      {"no vocab", [](Json& j) { j["model"].erase("vocab"); },
       absl::StatusCode::kInvalidArgument, "model.vocab is missing"},
      {"no merges", [](Json& j) { j["model"].erase("merges"); },
       absl::StatusCode::kInvalidArgument, "model.merges is missing"},
      {"no added_tokens", [](Json& j) { j.erase("added_tokens"); },
       absl::StatusCode::kInvalidArgument, "added_tokens is missing"},
      {"vocab id", [](Json& j) { j["model"]["vocab"]["a"] = "four"; },
       absl::StatusCode::kInvalidArgument, "model.vocab[\"a\"]"},
      {"merge of unknown token",
       [](Json& j) {
         j["model"]["merges"].push_back({"a", "q"});
       },
       absl::StatusCode::kInvalidArgument,
       "uses \"q\", which is not in model.vocab"},
      {"merge result unknown",
       [](Json& j) {
         j["model"]["merges"].push_back({"c", "a"});
       },
       absl::StatusCode::kInvalidArgument, "uses \"ca\""},
      {"legacy merge of three",
       [](Json& j) { j["model"]["merges"].push_back("a b c"); },
       absl::StatusCode::kInvalidArgument, "model.merges[4]"},
      {"merge shape", [](Json& j) { j["model"]["merges"].push_back(7); },
       absl::StatusCode::kInvalidArgument, "must be \"a b\" or [\"a\", \"b\"]"},
      {"added id", [](Json& j) { j["added_tokens"][2]["id"] = 40; },
       absl::StatusCode::kInvalidArgument,
       "has id 40 but the vocabulary gives it id 15"},
      {"added content", [](Json& j) { j["added_tokens"][2].erase("content"); },
       absl::StatusCode::kInvalidArgument,
       "added_tokens[2].content is missing"},
      {"normalizer",
       [](Json& j) {
         j["normalizer"] = {{"type", "NFC"}};
       },
       absl::StatusCode::kUnimplemented, "normalizer = {\"type\":\"NFC\"}"},
      {"wordpiece", [](Json& j) { j["model"]["type"] = "WordPiece"; },
       absl::StatusCode::kUnimplemented, "model.type"},
      {"metaspace",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}};
       },
       absl::StatusCode::kUnimplemented, "pre_tokenizer"},
      {"dropout", [](Json& j) { j["model"]["dropout"] = 0.1; },
       absl::StatusCode::kUnimplemented, "model.dropout"},
      {"byte fallback", [](Json& j) { j["model"]["byte_fallback"] = true; },
       absl::StatusCode::kUnimplemented, "model.byte_fallback"},
      {"single word",
       [](Json& j) { j["added_tokens"][2]["single_word"] = true; },
       absl::StatusCode::kUnimplemented, "added_tokens[2].single_word"},
      {"template",
       [](Json& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"}};
       },
       absl::StatusCode::kUnimplemented, "post_processor"},
      {"wrong type", [](Json& j) { j["added_tokens"][2]["lstrip"] = "yes"; },
       absl::StatusCode::kInvalidArgument, "a field has the wrong type"},
      {"roberta ids",
       [](Json& j) {
         j["post_processor"]["cls"] = {"<s>", "zero"};
       },
       absl::StatusCode::kInvalidArgument,
       "post_processor.cls must be [token, id]"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    Json json = MiniTokenizer();
    c.mutate(json);
    auto tok = Tokenizer::FromJson(json.dump(), "mini.json");
    EXPECT_EQ(tok.status().code(), c.code) << tok.status();
    EXPECT_THAT(tok.status().message(), HasSubstr("mini.json: "));
    EXPECT_THAT(tok.status().message(), HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace florence::engine
