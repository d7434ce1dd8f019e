#include "engine/tokenizer/utf8.h"

#include <cstdint>

namespace florence::engine::utf8 {
namespace {

bool IsContinuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// Examines the sequence starting at text[pos]. Returns its length and sets
// *valid. For an ill-formed sequence the length is that of its maximal subpart
// (>= 1): the bytes that one U+FFFD replaces. Follows Rust's
// core::str::Utf8Chunks (the same ranges as RFC 3629 / Unicode Table 3-7).
size_t Examine(absl::string_view text, size_t pos, bool* valid) {
  auto at = [&](size_t i) -> uint8_t {
    return i < text.size() ? static_cast<uint8_t>(text[i]) : 0;
  };
  const uint8_t first = at(pos);
  *valid = false;
  if (first < 0x80) {
    *valid = true;
    return 1;
  }
  int width = 0;
  if (first >= 0xC2 && first <= 0xDF) {
    width = 2;
  } else if (first >= 0xE0 && first <= 0xEF) {
    width = 3;
  } else if (first >= 0xF0 && first <= 0xF4) {
    width = 4;
  } else {
    return 1;
  }
  // The second byte's allowed range depends on the first (no overlongs, no
  // surrogates, nothing above U+10FFFF).
  const uint8_t second = at(pos + 1);
  uint8_t lo = 0x80, hi = 0xBF;
  if (first == 0xE0) lo = 0xA0;
  if (first == 0xED) hi = 0x9F;
  if (first == 0xF0) lo = 0x90;
  if (first == 0xF4) hi = 0x8F;
  if (second < lo || second > hi) return 1;
  for (int i = 2; i < width; ++i) {
    if (!IsContinuation(at(pos + i))) return i;
  }
  *valid = true;
  return width;
}

}  // namespace

bool Next(absl::string_view text, size_t* pos, char32_t* code_point) {
  bool valid;
  const size_t len = Examine(text, *pos, &valid);
  if (!valid) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(text.data()) + *pos;
  char32_t c;
  switch (len) {
    case 1:
      c = p[0];
      break;
    case 2:
      c = ((p[0] & 0x1F) << 6) | (p[1] & 0x3F);
      break;
    case 3:
      c = ((p[0] & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
      break;
    default:
      c = ((p[0] & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) |
          (p[3] & 0x3F);
      break;
  }
  *code_point = c;
  *pos += len;
  return true;
}

bool IsValid(absl::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    bool valid;
    pos += Examine(text, pos, &valid);
    if (!valid) return false;
  }
  return true;
}

std::string Lossy(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    bool valid;
    const size_t len = Examine(bytes, pos, &valid);
    if (valid) {
      out.append(bytes.data() + pos, len);
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
    }
    pos += len;
  }
  return out;
}

void Append(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

bool IsWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool IsPythonSpace(char32_t c) {
  return IsWhiteSpace(c) || (c >= 0x1C && c <= 0x1F);
}

absl::string_view PythonStrip(absl::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t pos = begin;
    char32_t c;
    if (!Next(text, &pos, &c) || !IsPythonSpace(c)) break;
    begin = pos;
  }
  // Scan forward remembering where the last non-space code point ends, so that
  // no backwards UTF-8 decoding is needed.
  size_t end = begin;
  for (size_t pos = begin; pos < text.size();) {
    char32_t c;
    if (!Next(text, &pos, &c)) {  // not valid UTF-8: keep the rest as is
      end = text.size();
      break;
    }
    if (!IsPythonSpace(c)) end = pos;
  }
  return text.substr(begin, end - begin);
}

absl::string_view TruncateAtCodePoint(absl::string_view text,
                                      size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  while (end > 0 && IsContinuation(static_cast<uint8_t>(text[end]))) --end;
  return text.substr(0, end);
}

}  // namespace florence::engine::utf8
