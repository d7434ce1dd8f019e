// Reproduces, for the settings Florence-2's tokenizer.json uses, these parts of
// huggingface/tokenizers (Rust):
//   tokenizer/added_vocabulary.rs  add_tokens (id assignment), find_matches,
//                                  extract_and_normalize (two passes)
//   pre_tokenizers/byte_level.rs   GPT-2 regex split, bytes_char alphabet,
//                                  ByteLevel decoder
//   models/bpe/{model,word}.rs     merge_word / merge_all (rank-ordered heap)
//   processors/roberta.rs          <s> ... </s>
//   tokenizer/mod.rs               decode
#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <queue>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "engine/status_macros.h"
#include "engine/tokenizer/unicode_classes.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace florence::engine {
namespace {

using Json = nlohmann::json;

// ---- GPT-2 byte-level alphabet

// bytes_char(): printable Latin-1 bytes map to themselves, the other 68 bytes
// to U+0100.. in byte order, so every byte is a visible character.
std::array<char32_t, 256> MakeByteToChar() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
                           (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

const std::array<char32_t, 256>& ByteToChar() {
  static const std::array<char32_t, 256> table = MakeByteToChar();
  return table;
}

// The byte a byte-level character stands for, or -1 if it is none.
int ByteOf(char32_t c) {
  static const std::array<int16_t, 0x144> table = [] {  // chars are < U+0144
    std::array<int16_t, 0x144> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[ByteToChar()[b]] = static_cast<int16_t>(b);
    return t;
  }();
  return c < table.size() ? table[c] : -1;
}

// The ByteLevel decoder of one token: its characters mapped back to bytes, or,
// if any character is outside the alphabet, the token's own UTF-8 (HF's
// decode_chain does the same per token).
std::string ByteLevelDecodeToken(absl::string_view token) {
  std::string bytes;
  for (size_t pos = 0; pos < token.size();) {
    char32_t c;
    if (!utf8::Next(token, &pos, &c) || ByteOf(c) < 0) {
      return std::string(token);
    }
    bytes.push_back(static_cast<char>(ByteOf(c)));
  }
  return bytes;
}

// The byte-level form of raw bytes: each byte as its alphabet character.
std::string ByteLevelEncode(absl::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) utf8::Append(ByteToChar()[b], &out);
  return out;
}

// ---- GPT-2 pre-tokenizer

// HF splits each piece with the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// run by Oniguruma (Unicode 16.0 classes; \s = White_Space). A regex library
// here would bring its own Unicode version (PCRE2 10.42: Unicode 14, and a \s
// that includes U+180E), so the regex is executed by hand below, with the
// classes pinned in unicode_classes.cc. The alternatives are tried in order
// at each position, as a backtracking engine does.
enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

CharClass ClassOf(char32_t c) {
  if (unicode::IsLetter(c)) return CharClass::kLetter;
  if (unicode::IsNumber(c)) return CharClass::kNumber;
  if (utf8::IsWhiteSpace(c)) return CharClass::kSpace;
  return CharClass::kOther;
}

// Appends to `parts` the consecutive matches of the regex in valid UTF-8
// `text` (they always cover it).
void SplitGpt2(absl::string_view text, std::vector<absl::string_view>* parts) {
  std::vector<char32_t> cps;
  std::vector<size_t> offsets;  // byte offset of each code point, plus the end
  std::vector<CharClass> cls;
  for (size_t pos = 0; pos < text.size();) {
    offsets.push_back(pos);
    char32_t c;
    if (!utf8::Next(text, &pos, &c)) {  // precondition violated; keep the byte
      c = 0xFFFD;
      ++pos;
    }
    cps.push_back(c);
    cls.push_back(ClassOf(c));
  }
  const size_t n = cps.size();
  offsets.push_back(text.size());
  // End of the run of class `k` starting at code point i.
  auto run = [&](size_t i, CharClass k) {
    while (i < n && cls[i] == k) ++i;
    return i;
  };
  auto match_at = [&](size_t i) -> size_t {
    // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
    if (cps[i] == '\'' && i + 1 < n) {
      const char32_t a = cps[i + 1];
      if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
      if (i + 2 < n) {
        const char32_t b = cps[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
            (a == 'l' && b == 'l'))
          return i + 3;
      }
    }
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': a space joins the run after
    // it.
    if (cps[i] == ' ' && i + 1 < n && cls[i + 1] != CharClass::kSpace)
      return run(i + 1, cls[i + 1]);
    if (cls[i] != CharClass::kSpace) return run(i, cls[i]);
    // '\s+(?!\S)': the whitespace run, less its last character if a
    // non-space follows (then that character joins the next match); a single
    // whitespace before a non-space falls through to '\s+'.
    const size_t end = run(i, CharClass::kSpace);
    if (end < n && end - i >= 2) return end - 1;
    return end;
  };
  for (size_t i = 0; i < n;) {
    const size_t end = match_at(i);
    parts->push_back(text.substr(offsets[i], offsets[end] - offsets[i]));
    i = end;
  }
}

// ---- Added tokens

struct AddedToken {
  std::string content;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A byte trie over added-token contents answering "the leftmost, then longest,
// token occurring at or after `from`" (daachorse's LeftmostLongest).
class AddedMatcher {
 public:
  AddedMatcher() : nodes_(1) {}

  void Add(absl::string_view content, int32_t id) {
    if (content.empty()) return;
    first_byte_[static_cast<uint8_t>(content[0])] = true;
    int32_t node = 0;
    for (unsigned char c : content) {
      auto it = nodes_[node].next.find(c);
      if (it == nodes_[node].next.end()) {
        nodes_.emplace_back();
        it = nodes_[node]
                 .next.emplace(c, static_cast<int32_t>(nodes_.size() - 1))
                 .first;
      }
      node = it->second;
    }
    nodes_[node].id = id;
  }

  bool Find(absl::string_view text, size_t from, size_t* begin, size_t* end,
            int32_t* id) const {
    for (size_t i = from; i < text.size(); ++i) {
      if (!first_byte_[static_cast<uint8_t>(text[i])]) continue;
      int32_t node = 0;
      size_t best_end = 0;
      for (size_t j = i; j < text.size(); ++j) {
        auto it = nodes_[node].next.find(static_cast<uint8_t>(text[j]));
        if (it == nodes_[node].next.end()) break;
        node = it->second;
        if (nodes_[node].id >= 0) {
          best_end = j + 1;
          *id = nodes_[node].id;
        }
      }
      if (best_end > 0) {
        *begin = i;
        *end = best_end;
        return true;
      }
    }
    return false;
  }

 private:
  struct Node {
    absl::flat_hash_map<uint8_t, int32_t> next;
    int32_t id = -1;
  };
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
};

// A piece of the input: an added token (id >= 0) or text still to be
// pre-tokenized (id < 0).
struct Piece {
  absl::string_view text;
  int32_t id;
};

// Start of the run of Unicode whitespace that ends at `end` (HF: `\s*$` on
// text[..end]). `text` is valid UTF-8.
size_t WhitespaceRunStart(absl::string_view text, size_t end) {
  size_t begin = end;
  while (begin > 0) {
    size_t start = begin - 1;
    while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80)
      --start;
    size_t pos = start;
    char32_t c;
    if (!utf8::Next(text, &pos, &c) || !utf8::IsWhiteSpace(c)) break;
    begin = start;
  }
  return begin;
}

// End of the run of Unicode whitespace starting at `begin` (HF: `^\s*`).
size_t WhitespaceRunEnd(absl::string_view text, size_t begin) {
  size_t end = begin;
  while (end < text.size()) {
    size_t pos = end;
    char32_t c;
    if (!utf8::Next(text, &pos, &c) || !utf8::IsWhiteSpace(c)) break;
    end = pos;
  }
  return end;
}

// ---- BPE

struct Merge {
  uint32_t rank;
  int32_t new_id;
};

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) |
         static_cast<uint32_t>(b);
}

// Words longer than this are not cached (HF's MAX_LENGTH), nor more than
// kCacheCapacity of them (HF's DEFAULT_CACHE_CAPACITY). The cache only saves
// time; results never depend on it.
constexpr size_t kCacheMaxWordBytes = 256;
constexpr size_t kCacheCapacity = 10000;

// ---- JSON reading

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(
      std::fopen(path.c_str(), "rb"), &std::fclose);
  if (file == nullptr) {
    const int err = errno;
    if (err == ENOENT)
      return absl::NotFoundError(absl::StrCat(path, " not found"));
    return absl::ErrnoToStatus(err, absl::StrCat("cannot open ", path));
  }
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0)
    text.append(buffer, n);
  if (std::ferror(file.get())) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
  }
  return text;
}

// Errors while reading one document, all prefixed with where it came from.
class Reader {
 public:
  explicit Reader(absl::string_view origin) : origin_(origin) {}

  absl::Status Invalid(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(origin_, ": ", field, " ", what));
  }
  absl::Status Unsupported(absl::string_view field, const Json& value) const {
    return absl::UnimplementedError(
        absl::StrCat(origin_, ": ", field, " = ", value.dump(),
                     " is not supported by the C++ tokenizer (written for "
                     "Florence-2's byte-level BPE tokenizer.json)"));
  }

  // obj[key] must exist and satisfy `ok`.
  template <typename Pred>
  absl::StatusOr<const Json*> Get(const Json& obj, absl::string_view path,
                                  const char* key, Pred ok,
                                  absl::string_view expected) const {
    auto it = obj.find(key);
    if (it == obj.end()) return Invalid(path, "is missing");
    if (!ok(*it)) return Invalid(path, absl::StrCat("must be ", expected));
    return &*it;
  }

  // Optional boolean that must equal `supported` when present and not null.
  absl::Status RequireBool(const Json& obj, absl::string_view path,
                           const char* key, bool supported) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_boolean()) return Invalid(path, "must be a boolean");
    if (it->get<bool>() != supported) return Unsupported(path, *it);
    return absl::OkStatus();
  }

 private:
  std::string origin_;
};

bool IsObject(const Json& j) { return j.is_object(); }
bool IsArray(const Json& j) { return j.is_array(); }
bool IsString(const Json& j) { return j.is_string(); }
bool IsId(const Json& j) {
  return j.is_number_integer() && j.get<int64_t>() >= 0 &&
         j.get<int64_t>() < (int64_t{1} << 31) - 1;
}

}  // namespace

// ---- The tokenizer

struct Tokenizer::Data {
  absl::flat_hash_map<std::string, int32_t> vocab;      // BPE model vocabulary
  absl::flat_hash_map<std::string, int32_t> added_ids;  // added token -> id
  absl::flat_hash_map<int32_t, AddedToken> added;       // id -> added token
  absl::flat_hash_set<std::string> special_contents;    // HF special_tokens_set
  AddedMatcher plain_matcher;       // added tokens with normalized=false
  AddedMatcher normalized_matcher;  // added tokens with normalized=true

  // Indexed by id: the token string, its decoded bytes, flags.
  struct Entry {
    std::string token;
    std::string bytes;
    bool present = false;
    bool special = false;
  };
  std::vector<Entry> entries;

  // Id of each byte's one-character token, or -1.
  std::array<int32_t, 256> byte_ids{};
  absl::flat_hash_map<uint64_t, Merge> merges;
  std::optional<int32_t> unk;
  bool fuse_unk = false;
  bool ignore_merges = false;
  bool add_prefix_space = false;
  bool use_regex = true;
  std::optional<int32_t> cls;  // RobertaProcessing, if any
  std::optional<int32_t> sep;

  // Words already merged; speeds up repeated words only.
  mutable absl::Mutex cache_mu;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache
      ABSL_GUARDED_BY(cache_mu);
};

Tokenizer::Tokenizer(std::unique_ptr<Data> data) : d_(std::move(data)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(
    const std::string& path) {
  FLORENCE_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return FromJson(text, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    absl::string_view json_text, absl::string_view origin) {
  // Typed reads (value(), get<>()) throw on a wrong type; Build names most
  // fields itself, this catches the rest.
  try {
    FLORENCE_ASSIGN_OR_RETURN(std::unique_ptr<Data> data,
                              Build(json_text, origin));
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(data)));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": a field has the wrong type (", e.what(), ")"));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer::Data>> Tokenizer::Build(
    absl::string_view json_text, absl::string_view origin) {
  const Reader r(origin);
  Json doc;
  try {
    doc = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, " is not valid JSON (", e.what(), ")"));
  }
  if (!doc.is_object())
    return r.Invalid("the document", "must be a JSON object");
  auto data = std::make_unique<Data>();

  // Parts of the pipeline other than BPE: only what Florence-2 uses.
  if (auto it = doc.find("normalizer"); it != doc.end() && !it->is_null()) {
    return r.Unsupported("normalizer", *it);
  }
  FLORENCE_ASSIGN_OR_RETURN(
      const Json* pre,
      r.Get(doc, "pre_tokenizer", "pre_tokenizer", IsObject, "an object"));
  if (pre->value("type", "") != "ByteLevel")
    return r.Unsupported("pre_tokenizer", *pre);
  data->add_prefix_space = pre->value("add_prefix_space", false);
  data->use_regex = pre->value("use_regex", true);
  FLORENCE_ASSIGN_OR_RETURN(
      const Json* decoder,
      r.Get(doc, "decoder", "decoder", IsObject, "an object"));
  if (decoder->value("type", "") != "ByteLevel")
    return r.Unsupported("decoder", *decoder);
  if (auto it = doc.find("post_processor"); it != doc.end() && !it->is_null()) {
    const std::string type = it->is_object() ? it->value("type", "") : "";
    if (type == "RobertaProcessing") {
      for (const char* key : {"cls", "sep"}) {
        auto v = it->find(key);
        if (v == it->end() || !v->is_array() || v->size() != 2 ||
            !(*v)[0].is_string() || !IsId((*v)[1])) {
          return r.Invalid(absl::StrCat("post_processor.", key),
                           "must be [token, id]");
        }
        (key[0] == 'c' ? data->cls : data->sep) = (*v)[1].get<int32_t>();
      }
    } else if (type != "ByteLevel") {  // ByteLevel only trims offsets
      return r.Unsupported("post_processor", *it);
    }
  }
  for (const char* key : {"truncation", "padding"}) {
    if (auto it = doc.find(key); it != doc.end() && !it->is_null()) {
      return r.Unsupported(key, *it);
    }
  }

  // The BPE model.
  FLORENCE_ASSIGN_OR_RETURN(
      const Json* model, r.Get(doc, "model", "model", IsObject, "an object"));
  if (model->value("type", "BPE") != "BPE")
    return r.Unsupported("model.type", model->at("type"));
  FLORENCE_ASSIGN_OR_RETURN(
      const Json* vocab,
      r.Get(*model, "model.vocab", "vocab", IsObject, "an object"));
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab->items()) {
    if (!IsId(id)) {
      return r.Invalid(absl::StrCat("model.vocab[", Json(token).dump(), "]"),
                       "must be a non-negative integer id");
    }
    data->vocab[token] = id.get<int32_t>();
    max_id = std::max(max_id, id.get<int32_t>());
  }
  if (auto it = model->find("dropout");
      it != model->end() && !it->is_null() &&
      !(it->is_number() && it->get<double>() == 0)) {
    return r.Unsupported("model.dropout", *it);
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto it = model->find(key);
        it != model->end() && !it->is_null() &&
        !(it->is_string() && it->get<std::string>().empty())) {
      return r.Unsupported(absl::StrCat("model.", key), *it);
    }
  }
  FLORENCE_RETURN_IF_ERROR(
      r.RequireBool(*model, "model.byte_fallback", "byte_fallback", false));
  data->fuse_unk = model->value("fuse_unk", false);
  data->ignore_merges = model->value("ignore_merges", false);
  if (auto it = model->find("unk_token");
      it != model->end() && !it->is_null()) {
    auto unk = it->is_string() ? data->vocab.find(it->get<std::string>())
                               : data->vocab.end();
    if (unk == data->vocab.end())
      return r.Invalid("model.unk_token", "must be a token of model.vocab");
    data->unk = unk->second;
  }

  // Merges: "a b" strings (older files) or ["a", "b"] pairs; rank = position.
  FLORENCE_ASSIGN_OR_RETURN(
      const Json* merges,
      r.Get(*model, "model.merges", "merges", IsArray, "an array"));
  uint32_t rank = 0;
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& merge = (*merges)[i];
    const std::string path = absl::StrCat("model.merges[", i, "]");
    std::string a, b;
    if (merge.is_string()) {
      const std::string& line = merge.get_ref<const std::string&>();
      if (absl::StartsWith(line, "#version")) continue;
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      if (parts.size() != 2) {
        return r.Invalid(
            path, absl::StrCat("= ", merge.dump(),
                               " must be two tokens separated by one space"));
      }
      a = std::move(parts[0]);
      b = std::move(parts[1]);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      a = merge[0].get<std::string>();
      b = merge[1].get<std::string>();
    } else {
      return r.Invalid(path,
                       absl::StrCat("= ", merge.dump(),
                                    " must be \"a b\" or [\"a\", \"b\"]"));
    }
    auto ia = data->vocab.find(a), ib = data->vocab.find(b),
         ic = data->vocab.find(a + b);
    for (const auto& [it, token] :
         {std::pair{ia, a}, std::pair{ib, b}, std::pair{ic, a + b}}) {
      if (it == data->vocab.end()) {
        return r.Invalid(path, absl::StrCat("uses ", Json(token).dump(),
                                            ", which is not in model.vocab"));
      }
    }
    // A repeated pair keeps its last rank, as HF's HashMap collect does.
    data->merges.insert_or_assign(PairKey(ia->second, ib->second),
                                  Merge{rank, ic->second});
    ++rank;
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    utf8::Append(ByteToChar()[b], &ch);
    auto it = data->vocab.find(ch);
    data->byte_ids[b] = it == data->vocab.end() ? -1 : it->second;
  }

  // Added tokens, with ids assigned as HF's AddedVocabulary::add_tokens does:
  // a token already in the vocabulary keeps that id, new ones count up from
  // the vocabulary's size. The file's ids must agree.
  FLORENCE_ASSIGN_OR_RETURN(
      const Json* added,
      r.Get(doc, "added_tokens", "added_tokens", IsArray, "an array"));
  int32_t next_id = static_cast<int32_t>(data->vocab.size());
  for (size_t i = 0; i < added->size(); ++i) {
    const Json& t = (*added)[i];
    const std::string path = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object()) return r.Invalid(path, "must be an object");
    FLORENCE_ASSIGN_OR_RETURN(
        const Json* content,
        r.Get(t, path + ".content", "content", IsString, "a string"));
    FLORENCE_ASSIGN_OR_RETURN(const Json* id, r.Get(t, path + ".id", "id", IsId,
                                                    "a non-negative integer"));
    FLORENCE_RETURN_IF_ERROR(
        r.RequireBool(t, path + ".single_word", "single_word", false));
    AddedToken token;
    token.content = content->get<std::string>();
    token.lstrip = t.value("lstrip", false);
    token.rstrip = t.value("rstrip", false);
    token.normalized = t.value("normalized", true);
    token.special = t.value("special", false);
    if (token.content.empty()) continue;  // HF ignores empty tokens
    int32_t assigned;
    if (auto it = data->added_ids.find(token.content);
        it != data->added_ids.end()) {
      assigned = it->second;
    } else if (auto v = data->vocab.find(token.content);
               v != data->vocab.end()) {
      assigned = v->second;
    } else {
      assigned = next_id++;
    }
    if (assigned != id->get<int32_t>()) {
      return r.Invalid(
          path, absl::StrCat("(", Json(token.content).dump(), ") has id ",
                             id->get<int32_t>(),
                             " but the vocabulary gives it id ", assigned));
    }
    if (token.special) data->special_contents.insert(token.content);
    data->added_ids[token.content] = assigned;
    data->added[assigned] = std::move(token);
    max_id = std::max(max_id, assigned);
  }
  for (const auto& [id, token] : data->added) {
    (token.normalized ? data->normalized_matcher : data->plain_matcher)
        .Add(token.content, id);
  }
  for (std::optional<int32_t> special : {data->cls, data->sep, data->unk}) {
    if (special.has_value() && *special > max_id) {
      return r.Invalid(
          "post_processor / model.unk_token",
          absl::StrCat("names id ", *special, ", which is no token"));
    }
  }

  // Decoding table. Added tokens shadow vocabulary entries with the same id.
  data->entries.resize(static_cast<size_t>(max_id) + 1);
  for (const auto& [token, id] : data->vocab) {
    data->entries[id].token = token;
    data->entries[id].present = true;
  }
  for (const auto& [id, token] : data->added) {
    data->entries[id].token = token.content;
    data->entries[id].present = true;
  }
  for (Data::Entry& e : data->entries) {
    if (!e.present) continue;
    e.bytes = ByteLevelDecodeToken(e.token);
    e.special = data->special_contents.contains(e.token);
  }

  return data;
}

namespace {

// HF find_matches: splits `sentence` around the added tokens `matcher` finds,
// appending the pieces to `out`.
void SplitAdded(absl::string_view sentence, const AddedMatcher& matcher,
                const absl::flat_hash_map<int32_t, AddedToken>& added,
                std::vector<Piece>* out) {
  size_t start_offset = 0;  // end of the previous piece
  size_t search = 0;        // where the next match may start
  size_t begin = 0, end = 0;
  int32_t id = -1;
  while (matcher.Find(sentence, search, &begin, &end, &id)) {
    search = end;
    const AddedToken& token = added.at(id);
    // lstrip/rstrip: the whitespace next to the token becomes part of it
    // (and so yields no ids of its own).
    if (token.lstrip)
      begin = std::max(WhitespaceRunStart(sentence, begin), start_offset);
    if (token.rstrip) end = WhitespaceRunEnd(sentence, end);
    begin = std::max(begin, start_offset);
    if (start_offset < begin)
      out->push_back({sentence.substr(start_offset, begin - start_offset), -1});
    out->push_back({sentence.substr(begin, end - begin), id});
    start_offset = end;
  }
  if (start_offset < sentence.size())
    out->push_back({sentence.substr(start_offset), -1});
}

}  // namespace

void Tokenizer::EncodeWord(absl::string_view word,
                           std::vector<int32_t>* ids) const {
  const bool cacheable = word.size() < kCacheMaxWordBytes;
  if (cacheable) {
    absl::MutexLock lock(&d_->cache_mu);
    auto it = d_->cache.find(word);
    if (it != d_->cache.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> result;
  if (d_->ignore_merges) {
    if (auto it = d_->vocab.find(ByteLevelEncode(word));
        it != d_->vocab.end()) {
      result.push_back(it->second);
    }
  }
  if (result.empty()) {
    // HF Word: a doubly linked list of symbols merged through a min-heap keyed
    // by (rank, position); stale heap entries are recognised and skipped.
    struct Symbol {
      int32_t id;
      int32_t prev, next;
      bool alive;
    };
    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    bool pending_unk = false;  // an unknown byte not yet emitted (fuse_unk)
    auto push = [&](int32_t id) {
      const auto n = static_cast<int32_t>(symbols.size());
      symbols.push_back({id, n - 1, n + 1, true});
    };
    for (unsigned char b : word) {
      const int32_t id = d_->byte_ids[b];
      if (id >= 0) {
        if (pending_unk) push(*d_->unk);
        pending_unk = false;
        push(id);
      } else if (d_->unk.has_value()) {
        // A byte without a token becomes <unk> (fused with the next one if
        // fuse_unk); without an unk_token it vanishes, as in HF.
        if (pending_unk && !d_->fuse_unk) push(*d_->unk);
        pending_unk = true;
      }
    }
    if (pending_unk) push(*d_->unk);
    if (!symbols.empty()) symbols.back().next = -1;

    struct Candidate {
      uint32_t rank;
      int32_t pos;
      int32_t new_id;
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::priority_queue<Candidate, std::vector<Candidate>,
                        std::greater<Candidate>>
        queue;
    auto consider = [&](int32_t left) {
      const int32_t right = symbols[left].next;
      if (right < 0) return;
      auto it = d_->merges.find(PairKey(symbols[left].id, symbols[right].id));
      if (it != d_->merges.end())
        queue.push({it->second.rank, left, it->second.new_id});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i)
      consider(i);
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& left = symbols[top.pos];
      if (!left.alive || left.next < 0) continue;
      const Symbol right = symbols[left.next];
      auto it = d_->merges.find(PairKey(left.id, right.id));
      if (it == d_->merges.end() || it->second.new_id != top.new_id)
        continue;  // stale
      symbols[left.next].alive = false;
      left.id = top.new_id;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = top.pos;
      if (left.prev >= 0) consider(left.prev);
      consider(top.pos);
    }
    for (const Symbol& s : symbols) {
      if (s.alive) result.push_back(s.id);
    }
  }
  ids->insert(ids->end(), result.begin(), result.end());
  if (cacheable) {
    absl::MutexLock lock(&d_->cache_mu);
    if (d_->cache.size() < kCacheCapacity)
      d_->cache.emplace(word, std::move(result));
  }
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text,
                                       bool add_special_tokens) const {
  std::string repaired;
  if (!utf8::IsValid(text)) {
    repaired = utf8::Lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  if (add_special_tokens && d_->cls.has_value()) ids.push_back(*d_->cls);

  // Added tokens: non-normalized ones over the whole text first, then the
  // normalized ones inside the remaining pieces (HF extract_and_normalize).
  std::vector<Piece> first, pieces;
  SplitAdded(text, d_->plain_matcher, d_->added, &first);
  for (const Piece& piece : first) {
    if (piece.id >= 0) {
      pieces.push_back(piece);
    } else {
      SplitAdded(piece.text, d_->normalized_matcher, d_->added, &pieces);
    }
  }

  std::vector<absl::string_view> words;
  std::string prefixed;
  for (const Piece& piece : pieces) {
    if (piece.id >= 0) {
      ids.push_back(piece.id);
      continue;
    }
    absl::string_view part = piece.text;
    if (d_->add_prefix_space && !absl::StartsWith(part, " ")) {
      prefixed = absl::StrCat(" ", part);
      part = prefixed;
    }
    words.clear();
    if (d_->use_regex) {
      SplitGpt2(part, &words);
    } else {
      words.push_back(part);
    }
    for (absl::string_view word : words) EncodeWord(word, &ids);
  }
  if (add_special_tokens && d_->sep.has_value()) ids.push_back(*d_->sep);
  return ids;
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids,
                              bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= d_->entries.size()) continue;
    const Data::Entry& e = d_->entries[id];
    if (!e.present || (skip_special_tokens && e.special)) continue;
    bytes += e.bytes;
  }
  return utf8::Lossy(bytes);
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (auto it = d_->added_ids.find(token); it != d_->added_ids.end())
    return it->second;
  if (auto it = d_->vocab.find(token); it != d_->vocab.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= d_->entries.size() ||
      !d_->entries[id].present) {
    return std::nullopt;
  }
  return d_->entries[id].token;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < d_->entries.size() &&
         d_->entries[id].special;
}

int32_t Tokenizer::vocab_size() const {
  return static_cast<int32_t>(d_->entries.size());
}

}  // namespace florence::engine
