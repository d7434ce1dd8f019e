// UTF-8 helpers shared by the tokenizer and the prompt builder. Each one
// reproduces the behaviour of the Rust or Python function named in its comment,
// because the reference tokenizer (HF `tokenizers`, Rust) and processor
// (transformers, Python) are what our output is compared against.
//
// Pure functions, thread-safe.
#ifndef FLORENCE_ENGINE_TOKENIZER_UTF8_H_
#define FLORENCE_ENGINE_TOKENIZER_UTF8_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace florence::engine::utf8 {

// Decodes the well-formed UTF-8 sequence at `text[*pos]` into `*code_point` and
// advances `*pos` past it. Returns false (and leaves both unchanged) if the
// bytes there are not a well-formed sequence (RFC 3629: no overlongs, no
// surrogates, nothing above U+10FFFF). Precondition: *pos < text.size().
bool Next(absl::string_view text, size_t* pos, char32_t* code_point);

// True if `text` is entirely well-formed UTF-8.
bool IsValid(absl::string_view text);

// Rust's String::from_utf8_lossy: every maximal ill-formed subsequence
// (Unicode "substitution of maximal subparts") becomes one U+FFFD.
std::string Lossy(absl::string_view bytes);

// Appends the UTF-8 encoding of `code_point` (a Unicode scalar value).
void Append(char32_t code_point, std::string* out);

// Unicode White_Space, which is what Rust regex's `\s` and Oniguruma's `\s`
// (the GPT-2 pre-tokenizer's regex in HF tokenizers) match.
bool IsWhiteSpace(char32_t c);

// Python's str.isspace() (used by str.strip()): White_Space plus the
// information separators U+001C..U+001F.
bool IsPythonSpace(char32_t c);

// Python's str.strip() with no arguments. `text` must be valid UTF-8.
absl::string_view PythonStrip(absl::string_view text);

// The longest prefix of `text` of at most `max_bytes` bytes that does not cut
// a UTF-8 sequence, for quoting user text in error messages.
absl::string_view TruncateAtCodePoint(absl::string_view text, size_t max_bytes);

}  // namespace florence::engine::utf8

#endif  // FLORENCE_ENGINE_TOKENIZER_UTF8_H_
