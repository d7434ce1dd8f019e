#include "engine/postprocess/python_text.h"

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace florence::engine::python_text {
namespace {

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// The code point encoded at `pos` and its length in bytes; length 0 when the
// bytes there are not valid UTF-8 (overlong forms included, which never encode
// whitespace anyway).
struct Decoded {
  uint32_t code_point = 0;
  size_t length = 0;
};

Decoded DecodeAt(absl::string_view text, size_t pos) {
  const auto byte = [&](size_t i) {
    return static_cast<unsigned char>(text[pos + i]);
  };
  const unsigned char lead = byte(0);
  size_t length = 0;
  uint32_t code_point = 0;
  if (lead < 0x80) return {lead, 1};
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    code_point = lead & 0x07;
  } else {
    return {};
  }
  if (pos + length > text.size()) return {};
  for (size_t i = 1; i < length; ++i) {
    if (!IsContinuation(byte(i))) return {};
    code_point = (code_point << 6) | (byte(i) & 0x3F);
  }
  return {code_point, length};
}

bool IsPythonSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 ||
         c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

}  // namespace

size_t SpaceLengthAt(absl::string_view text, size_t pos) {
  if (pos >= text.size()) return 0;
  const Decoded d = DecodeAt(text, pos);
  return d.length > 0 && IsPythonSpace(d.code_point) ? d.length : 0;
}

size_t SpaceLengthBefore(absl::string_view text, size_t end) {
  if (end == 0 || end > text.size()) return 0;
  // Step back over at most three continuation bytes to the lead byte.
  size_t start = end - 1;
  while (start > 0 && end - start < 4 &&
         IsContinuation(static_cast<unsigned char>(text[start]))) {
    --start;
  }
  const Decoded d = DecodeAt(text, start);
  return d.length == end - start && IsPythonSpace(d.code_point) ? d.length : 0;
}

absl::string_view Strip(absl::string_view text) {
  size_t begin = 0;
  while (size_t n = SpaceLengthAt(text, begin)) begin += n;
  size_t end = text.size();
  while (end > begin) {
    const size_t n = SpaceLengthBefore(text, end);
    if (n == 0) break;
    end -= n;
  }
  return text.substr(begin, end - begin);
}

std::string RemoveAll(absl::string_view text, absl::string_view token) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = text.find(token, pos);
    if (hit == absl::string_view::npos) break;
    out.append(text.data() + pos, hit - pos);
    pos = hit + token.size();
  }
  out.append(text.data() + pos, text.size() - pos);
  return out;
}

std::string DropNonAscii(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (static_cast<unsigned char>(c) < 0x80) out.push_back(c);
  }
  return out;
}

}  // namespace florence::engine::python_text
