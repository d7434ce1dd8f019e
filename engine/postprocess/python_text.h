// The few Python string semantics Florence-2's reference post-processor relies
// on, over UTF-8 bytes: str.strip() and the regex class \s (Unicode
// whitespace), str.replace(), and .encode("ascii", "ignore").
//
// Internal to florence_postprocess (parse.cc); exposed in a header so that the
// tests can pin these rules down on their own.
#ifndef FLORENCE_ENGINE_POSTPROCESS_PYTHON_TEXT_H_
#define FLORENCE_ENGINE_POSTPROCESS_PYTHON_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace florence::engine::python_text {

// Byte length of the character at `pos` if Python's str.isspace() holds for it
// (ASCII \t \n \v \f \r, U+001C..U+001F, space, U+0085, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000), else 0. Invalid
// UTF-8 is never whitespace.
size_t SpaceLengthAt(absl::string_view text, size_t pos);

// Byte length of the whitespace character that ends at `end`, else 0.
size_t SpaceLengthBefore(absl::string_view text, size_t end);

// str.strip(): without leading and trailing Unicode whitespace.
absl::string_view Strip(absl::string_view text);

// str.replace(token, ""): one left-to-right pass, non-overlapping; a token that
// the removal itself forms ("<<s>s>" -> "<s>") stays, as in Python.
std::string RemoveAll(absl::string_view text, absl::string_view token);

// str.encode("ascii", "ignore").decode(): every non-ASCII character dropped
// (for UTF-8 input, every byte >= 0x80).
std::string DropNonAscii(absl::string_view text);

}  // namespace florence::engine::python_text

#endif  // FLORENCE_ENGINE_POSTPROCESS_PYTHON_TEXT_H_
