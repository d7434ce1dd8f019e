// Character classes of the GPT-2 pre-tokenizer regex (\p{L}, \p{N}) at the
// Unicode version the reference tokenizer uses (HF tokenizers runs the regex
// with Oniguruma 6.9.10: Unicode 16.0), not the system's, so that splits match
// the reference for every code point. Whitespace (\s) is utf8::IsWhiteSpace.
//
// unicode_classes.cc is generated: tools/tokenizer_vectors.py
// --emit-unicode-classes engine/tokenizer/unicode_classes.cc. Thread-safe.
#ifndef FLORENCE_ENGINE_TOKENIZER_UNICODE_CLASSES_H_
#define FLORENCE_ENGINE_TOKENIZER_UNICODE_CLASSES_H_

namespace florence::engine::unicode {

bool IsLetter(char32_t c);  // General_Category L (Lu Ll Lt Lm Lo)
bool IsNumber(char32_t c);  // General_Category N (Nd Nl No)

}  // namespace florence::engine::unicode

#endif  // FLORENCE_ENGINE_TOKENIZER_UNICODE_CLASSES_H_
