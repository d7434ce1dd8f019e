#!/usr/bin/env python3
"""Reference vectors for the C++ tokenizer (engine/tokenizer/), from HF `tokenizers` and transformers.

  tokenizer_vectors.py --tokenizer build/models/tiny/tokenizer.json --out build/models/tokenizer_vectors.jsonl

Writes one JSON object per line (ASCII, \\u escapes), deterministic for a given --seed:
  {"kind": "classes", "L": [[lo, hi], ...], "N": [...], "WS": [...]}
      how the pre-tokenizer's regex classifies every code point (letter, number, whitespace; else other).
  {"kind": "text", "text": s, "ids": [...], "decoded": ..., "decoded_skip": ...}
      Tokenizer.from_file(...).encode(s, add_special_tokens=False).ids and decode(ids) with
      skip_special_tokens False / True. --count strings from many generators (scripts, combining marks,
      whitespace, emoji, digits, contractions, added tokens glued to text, random code points, long words,
      the Florence prompts).
  {"kind": "decode", "ids": [...], "decoded": ..., "decoded_skip": ...}
      decode() of random id sequences (partial UTF-8 byte tokens, unknown ids, specials).
  {"kind": "region", "width": W, "height": H, "box": [x1, y1, x2, y2], "loc": [a, b, c, d]}
      the Florence2 post-processor's quantize() on a float64 box (1000 bins, floor, clamp 0..999).
  {"kind": "prompt", "task": "<OD>", "text": input or "", "box": [...] or null, "width": W, "height": H,
   "prompt": constructed prompt string, "ids": [...]}
      Florence2Processor(text=task + input, images=<W x H image>)["input_ids"] after the 577 <image> ids.
      Region tasks: input = the loc string of quantize(box).

  tokenizer_vectors.py --tokenizer .../tokenizer.json --out /dev/null --emit-unicode-classes \\
      engine/tokenizer/unicode_classes.cc
regenerates the C++ pre-tokenizer's letter/number tables from the same probe as the "classes" record.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import unicodedata
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "tools"))

# (task token, input kind) as in engine/task.h.
TASKS: list[tuple[str, str]] = [
    ("<CAPTION>", "none"), ("<DETAILED_CAPTION>", "none"), ("<MORE_DETAILED_CAPTION>", "none"),
    ("<OD>", "none"), ("<DENSE_REGION_CAPTION>", "none"), ("<REGION_PROPOSAL>", "none"), ("<OCR>", "none"),
    ("<OCR_WITH_REGION>", "none"), ("<CAPTION_TO_PHRASE_GROUNDING>", "text"),
    ("<REFERRING_EXPRESSION_SEGMENTATION>", "text"), ("<REGION_TO_SEGMENTATION>", "region"),
    ("<OPEN_VOCABULARY_DETECTION>", "text"), ("<REGION_TO_CATEGORY>", "region"),
    ("<REGION_TO_DESCRIPTION>", "region"), ("<REGION_TO_OCR>", "region"),
]
TASK_TOKENS = [t for t, _ in TASKS]

# FLORENCE2.md 2.2 prompts as the tokenizer sees them, with example inputs.
FLORENCE_PROMPTS = [
    "What does the image describe?", "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.", "Locate the objects with category name in the image.",
    "Locate the objects in the image, with their descriptions.", "Locate the region proposals in the image.",
    "What is the text in the image?", "What is the text in the image, with regions?",
    "Locate the phrases in the caption: A green car parked in front of a yellow building.",
    "Locate a car in the image with mask", "What is the polygon mask of region <loc_702><loc_575><loc_866><loc_772>",
    "Locate wheels in the image.", "What is the region <loc_52><loc_332><loc_932><loc_774>?",
    "What does the region <loc_52><loc_332><loc_932><loc_774> describe?",
    "What text is in the region <loc_100><loc_100><loc_900><loc_300>?",
    "</s><s>car<loc_53><loc_333><loc_933><loc_774>door handle<loc_425><loc_1><loc_2><loc_3></s><pad><pad>",
    "<od>car<loc_1><loc_2><loc_3><loc_4></od>", "<poly><loc_1><loc_2><sep><loc_3><loc_4></poly><and>",
]
PROMPT_TEMPLATES = ["Locate the phrases in the caption: {input}", "Locate {input} in the image with mask",
                    "What is the polygon mask of region {input}", "Locate {input} in the image.",
                    "What is the region {input}?", "What does the region {input} describe?",
                    "What text is in the region {input}?"]

# Code point ranges of scripts and symbol blocks (only assigned code points are drawn).
SCRIPTS: list[tuple[int, int]] = [
    (0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x531, 0x58F),
    (0x5D0, 0x5EA), (0x600, 0x6FF), (0x700, 0x74F), (0x900, 0x97F), (0x980, 0x9FF), (0xB80, 0xBFF),
    (0xE00, 0xE7F), (0xE80, 0xEFF), (0xF00, 0xFFF), (0x10A0, 0x10FF), (0x1100, 0x11FF), (0x1200, 0x137F),
    (0x13A0, 0x13FF), (0x1780, 0x17FF), (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x2100, 0x214F),
    (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2460, 0x24FF), (0x2500, 0x257F), (0x3040, 0x309F),
    (0x30A0, 0x30FF), (0x3100, 0x312F), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xA000, 0xA48F),
    (0xFB00, 0xFB4F), (0xFE70, 0xFEFF), (0xFF00, 0xFFEF), (0x10000, 0x1007F), (0x10400, 0x1044F),
    (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0xE000, 0xE0FF),
]
COMBINING = [c for r in [(0x300, 0x36F), (0x483, 0x489), (0x591, 0x5BD), (0x64B, 0x65F), (0x93A, 0x94F),
                         (0x1AB0, 0x1ABE), (0x1DC0, 0x1DFF), (0x20D0, 0x20F0), (0xFE20, 0xFE2F)]
             for c in range(r[0], r[1] + 1) if unicodedata.category(chr(c)).startswith("M")]
WHITESPACE = [" ", " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x85", "\xa0", "\u1680", "\u2000",
              "\u2003", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u200b",
              "\u180e", "\ufeff", "\x1c", "\x1f", "\u2060"]
DIGITS = (list("0123456789") + [chr(c) for c in range(0x660, 0x66A)] + [chr(c) for c in range(0xFF10, 0xFF1A)]
          + list("²³¹¼½¾⁰⁴⁵ⅠⅡⅢⅫ①②⑳𝟎𝟗") + [chr(c) for c in range(0x966, 0x970)])
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("¡¿«»“”‘’„‚–—…·•§¶†‡‰′″‹›、。，！？：；「」『』【】〜・")
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'D", "’s",
                "’re", "'", "''", "'x", "'sss", "'dd", "'lll"]
WORDS = ["the", "a", "car", "wheels", "dog", "it", "don", "can", "we", "they", "you", "I", "naïve", "café",
         "Straße", "東京", "Москва", "Ελλάδα", "مرحبا", "שלום", "नमस्ते", "ไทย", "한국어", "hello", "World",
         "ABC", "image", "region", "polygon", "mask", "loc", "od", "ocr", "s", "pad", "unk", "sep", "poly"]
EMOJI_BASE = ["😀", "🚗", "👍", "👩", "👨", "🧑", "👧", "❤", "✨", "🏳", "🐈", "🌍", "🎉", "🤖", "☕", "✋", "🫠"]
SKIN = ["\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
ZWJ_SEQS = ["👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🧑🏽‍🚒", "👩🏿‍🤝‍👨🏻", "❤️‍🔥", "🐈‍⬛", "🫱🏼‍🫲🏾", "👁️‍🗨️"]
FLAGS = ["🇫🇷", "🇯🇵", "🇺🇸", "🇩🇪", "🇺🇳", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"]
KEYCAPS = ["1️⃣", "#️⃣", "*️⃣"]
ADDED = (["<s>", "</s>", "<pad>", "<unk>", "<mask>", "<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>",
          "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>", "<seg>", "</seg>", "<sep>",
          "<region_cap>", "</region_cap>", "<region_to_desciption>", "</region_to_desciption>", "<proposal>",
          "</proposal>", "<poly>", "</poly>", "<and>", "<image>"])
NEAR_MISSES = ["<loc_1000>", "<loc_-1>", "<loc_01>", "<loc_>", "<loc_5", "loc_5>", "<LOC_5>", "< s>", "<s >", "<s",
               "s>", "<<s>>", "<s>>", "<</s>", "<mask", "<MASK>", "<od", "<OD>", "<image", "<im age>", "<region_to_description>",
               "<>", "</>", "<<>>", "<\u200bs>"]


def assigned(cp: int) -> bool:
    return 0 <= cp <= 0x10FFFF and not (0xD800 <= cp <= 0xDFFF) and unicodedata.category(chr(cp)) != "Cn"


class Gen:
    """Seeded string generators; each returns one test string."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def char(self) -> str:
        r = self.r
        while True:
            lo, hi = r.choice(SCRIPTS)
            cp = r.randint(lo, hi)
            if assigned(cp):
                return chr(cp)

    def word(self, n: int | None = None) -> str:
        r = self.r
        if r.random() < 0.4:
            return r.choice(WORDS)
        lo, hi = r.choice(SCRIPTS)  # one script per word, mostly
        out = []
        for _ in range(n or r.randint(1, 10)):
            cp = r.randint(lo, hi)
            out.append(chr(cp) if assigned(cp) else self.char())
        return "".join(out)

    def ws(self) -> str:
        r = self.r
        return "".join(r.choice(WHITESPACE) for _ in range(r.choice([1, 1, 1, 2, 3, 5])))

    def emoji(self) -> str:
        r = self.r
        k = r.randint(0, 4)
        if k == 0:
            return r.choice(EMOJI_BASE) + (r.choice(SKIN) if r.random() < 0.5 else "")
        if k == 1:
            return r.choice(ZWJ_SEQS)
        if k == 2:
            return r.choice(FLAGS)
        if k == 3:
            return r.choice(KEYCAPS)
        return r.choice(EMOJI_BASE) + "\ufe0f" + "\u200d" + r.choice(EMOJI_BASE) + r.choice(SKIN)

    def number(self) -> str:
        r = self.r
        return "".join(r.choice(DIGITS) for _ in range(r.randint(1, 12)))

    def loc(self) -> str:
        return f"<loc_{self.r.randint(0, 999)}>"

    def added(self) -> str:
        r = self.r
        k = r.random()
        if k < 0.4:
            return self.loc()
        if k < 0.8:
            return r.choice(ADDED)
        if k < 0.9:
            return r.choice(TASK_TOKENS)
        return r.choice(NEAR_MISSES)

    def combining(self) -> str:
        r = self.r
        return self.char() + "".join(chr(r.choice(COMBINING)) for _ in range(r.randint(1, 4)))

    def garbage(self) -> str:
        """Random code points from the whole range (assigned or not, controls, NUL), valid UTF-8."""
        r = self.r
        out = []
        for _ in range(r.randint(1, 30)):
            k = r.random()
            if k < 0.3:
                cp = r.randint(0, 0x7F)
            elif k < 0.5:
                cp = r.randint(0x80, 0x7FF)
            elif k < 0.8:
                cp = r.randint(0x800, 0xFFFF)
            else:
                cp = r.randint(0x10000, 0x10FFFF)
            if 0xD800 <= cp <= 0xDFFF:
                cp = 0xFFFD
            out.append(chr(cp))
        return "".join(out)

    def contraction(self) -> str:
        r = self.r
        return r.choice(WORDS) + r.choice(CONTRACTIONS) + (r.choice([" ", "", ".", self.ws()]))

    def long_word(self) -> str:
        r = self.r
        k = r.randint(0, 5)
        n = r.randint(100, 1500)
        if k == 0:
            return r.choice("abcxyz") * n
        if k == 1:
            return "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
        if k == 2:
            return self.word(n)
        if k == 3:
            return "".join(r.choice("0123456789") for _ in range(n))
        if k == 4:
            return " " * r.randint(1, 300) + "x" + "\n" * r.randint(1, 50)
        return "".join(r.choice(PUNCT) for _ in range(n))

    def piece(self) -> str:
        r = self.r
        fns: list[Callable[[], str]] = [self.word, self.word, self.word, self.ws, self.emoji, self.number,
                                        lambda: r.choice(PUNCT), self.added, self.combining, self.contraction,
                                        self.garbage]
        return r.choice(fns)()

    def mixed(self) -> str:
        r = self.r
        parts = []
        for _ in range(r.randint(1, 12)):
            parts.append(self.piece())
            if r.random() < 0.5:
                parts.append(" ")
        return "".join(parts)

    def glued_specials(self) -> str:
        """Added tokens glued to text and whitespace (lstrip of <mask>, back-to-back tokens)."""
        r = self.r
        parts = []
        for _ in range(r.randint(1, 8)):
            k = r.random()
            if k < 0.35:
                parts.append(self.added())
            elif k < 0.5:
                parts.append(self.ws() + "<mask>")
            elif k < 0.75:
                parts.append(self.word())
            else:
                parts.append(r.choice([" ", "", self.ws(), r.choice(PUNCT)]))
        return "".join(parts)

    def prompt_like(self) -> str:
        r = self.r
        p = r.choice(FLORENCE_PROMPTS)
        k = r.random()
        if k < 0.3:
            return p
        if k < 0.6:
            return r.choice(PROMPT_TEMPLATES).replace("{input}", self.mixed())
        return p + r.choice(["", " ", "\n"]) + self.mixed()

    def one(self, i: int) -> str:
        r = self.r
        fns: list[Callable[[], str]] = [self.mixed, self.mixed, self.mixed, self.glued_specials, self.glued_specials,
                                        self.prompt_like, self.garbage, self.contraction, self.combining, self.emoji]
        if i % 50 == 0:
            return self.long_word()
        if i % 97 == 0:
            return ""
        return r.choice(fns)()


def fixed_strings() -> list[str]:
    """Hand-written cases that must always be present."""
    out = list(FLORENCE_PROMPTS)
    out += ["", " ", "  ", "\n", "\t", "\r\n", " a", "a ", "a  b", "a \t b", "a\n\nb", "a   ", "   a",
            "it's", "IT'S", "we're", "they've", "I'm", "you'll", "he'd", "don't", "’s", "a's b'S c'Re",
            "'s's's", "''s", "x'", "'", "hi  <mask> x", "hi\u3000<mask>", " <mask>", "<mask><mask>", "<mask>  <mask>",
            "a\x85b", "!\x85!", "!\xa0!", "\u2028a\u2029", "a\x1cb", "<s><s>x</s>", "a<loc_5>b", "<loc_999><loc_0>",
            "<loc_1000>", "\x00", "a\x00b", "\U0010FFFF", "\uFFFD", "\uFEFFx", "👨‍👩‍👧‍👦", "1️⃣", "🇫🇷🇯🇵",
            "naïve 東京 🚗  x", "e\u0301", "\u0301", "\u0301\u0302\u0303", "１２３", "²³", "Ⅻ", "٣٤٥"]
    for tok in ADDED + NEAR_MISSES + TASK_TOKENS:
        out += [tok, "x" + tok + "y", " " + tok + " ", tok + tok, "\t" + tok + "\n"]
    return out


def text_records(tok, count: int, seed: int) -> Iterator[dict]:
    gen = Gen(seed)
    strings = list(dict.fromkeys(fixed_strings()))  # unique, in order
    seen = set(strings)
    i = 0
    while len(strings) < count:
        s = gen.one(i)
        i += 1
        if s not in seen:
            seen.add(s)
            strings.append(s)
    for s in strings:
        ids = tok.encode(s, add_special_tokens=False).ids
        yield {"kind": "text", "text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
               "decoded_skip": tok.decode(ids, skip_special_tokens=True)}


def decode_records(tok, count: int, seed: int) -> Iterator[dict]:
    r = random.Random(seed + 1)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    # Byte-level tokens of single bytes (partial UTF-8 sequences), e.g. "Ã", "Ģ".
    single = [tok.token_to_id(t) for t in ["Ã", "Â", "ł", "ħ", "â", "Ģ", "ĭ", "ð", "Ł", "ĺ", "Ģ", "Ń", "ï", "¿", "½", "í",
                                           "ł", "Ġ", "Ċ", "ĉ", "ô", "õ", "ÿ", "À", "Á", "ø"]
              if tok.token_to_id(t) is not None]
    for _ in range(count):
        n = r.randint(0, 20)
        ids = []
        for _ in range(n):
            k = r.random()
            if k < 0.45:
                ids.append(r.choice(single))
            elif k < 0.75:
                ids.append(r.randint(0, vocab - 1))
            elif k < 0.9:
                ids.append(r.choice([0, 1, 2, 3, 50264, 50265, 50269, 51268, 51288, vocab - 1]))
            else:
                ids.append(r.randint(vocab, vocab + 100))  # unknown ids are dropped
        yield {"kind": "decode", "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
               "decoded_skip": tok.decode(ids, skip_special_tokens=True)}


WHITE_SPACE = {0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
               0x205F, 0x3000}


def char_classes(tok) -> dict[str, list[list[int]]]:
    """How the reference pre-tokenizer's regex (Oniguruma inside `tokenizers`) classifies every code point:
    "L" (\\p{L}), "N" (\\p{N}), "WS" (\\s), as inclusive [lo, hi] ranges; the rest is "other".

    Probed through ByteLevel's split: "a" + c stays one piece iff c is a letter, "1" + c iff a number, and
    "!" + c + "!" splits in three iff c is a letter, number or whitespace. ~10 s for all 1.1M code points.
    """
    pre = tok.pre_tokenizer
    classes: dict[str, list[list[int]]] = {"L": [], "N": [], "WS": []}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if len(pre.pre_tokenize_str("!" + c + "!")) == 1:
            continue  # other
        if len(pre.pre_tokenize_str("a" + c)) == 1:
            cls = "L"
        elif len(pre.pre_tokenize_str("1" + c)) == 1:
            cls = "N"
        else:
            cls = "WS"
        ranges = classes[cls]
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    ws = {c for lo, hi in classes["WS"] for c in range(lo, hi + 1)}
    assert ws == WHITE_SPACE, sorted(ws ^ WHITE_SPACE)  # utf8::IsWhiteSpace in C++
    return classes


def emit_unicode_classes(classes: dict[str, list[list[int]]], path: Path) -> None:
    """Writes engine/tokenizer/unicode_classes.cc: the letter and number tables of the C++ pre-tokenizer."""
    import tokenizers

    def table(name: str, ranges: list[list[int]]) -> str:
        rows = [f"    {{0x{lo:04X}, 0x{hi:04X}}}," for lo, hi in ranges]
        return f"constexpr Range {name}[] = {{\n" + "\n".join(rows) + "\n};\n"

    path.write_text(f"""// GENERATED by tools/tokenizer_vectors.py --emit-unicode-classes; do not edit.
//
// \\p{{L}} and \\p{{N}} as the GPT-2 pre-tokenizer regex of HF tokenizers {tokenizers.__version__} sees them:
// probed from its ByteLevel pre-tokenizer for every code point. They equal Oniguruma 6.9.10's CR_L / CR_N
// (src/unicode_property_data.c, Unicode 16.0), the regex engine `tokenizers` runs that regex with.
// tests/engine/tokenizer checks them again against the installed `tokenizers` (record kind "classes").
#include "engine/tokenizer/unicode_classes.h"

#include <algorithm>
#include <cstddef>
#include <iterator>

namespace florence::engine::unicode {{
namespace {{

struct Range {{
  char32_t lo;
  char32_t hi;  // inclusive
}};

{table("kLetters", classes["L"])}
{table("kNumbers", classes["N"])}
template <size_t N>
bool InRanges(const Range (&ranges)[N], char32_t c) {{
  const Range* it = std::upper_bound(std::begin(ranges), std::end(ranges), c,
                                     [](char32_t v, const Range& r) {{ return v < r.lo; }});
  return it != std::begin(ranges) && c <= std::prev(it)->hi;
}}

}}  // namespace

bool IsLetter(char32_t c) {{ return InRanges(kLetters, c); }}
bool IsNumber(char32_t c) {{ return InRanges(kNumbers, c); }}

}}  // namespace florence::engine::unicode
""")


IMAGE_SIZES = [(640, 480), (1, 1), (3, 7), (768, 768), (999, 1001), (1023, 767), (17, 5000), (4096, 4096),
               (1000, 1000), (333, 129)]


def boxes_for(r: random.Random, w: int, h: int) -> list[list[float]]:
    """Valid boxes (0 <= x1 < x2 <= w, 0 <= y1 < y2 <= h): whole image, bin edges, integer and random boxes."""
    out = [[0.0, 0.0, float(w), float(h)], [0.0, 0.0, w / 1000, h / 1000], [w * 0.999, h * 0.999, float(w), float(h)],
           [w / 2, h / 2, w / 2 + w / 1000, h / 2 + h / 1000]]
    for _ in range(12):  # exact bin edges k * (w / 1000)
        a, b = sorted(r.sample(range(0, 1001), 2))
        c, d = sorted(r.sample(range(0, 1001), 2))
        out.append([a * (w / 1000), c * (h / 1000), b * (w / 1000), d * (h / 1000)])
    for _ in range(8):  # next to bin edges
        a, b = sorted(r.sample(range(1, 1000), 2))
        eps = r.choice([1e-9, 1e-6, -1e-9, -1e-6])
        out.append([a * w / 1000 + eps, a * h / 1000 + eps, b * w / 1000 + eps, b * h / 1000 + eps])
    if w > 1 and h > 1:
        for _ in range(8):  # integer pixels
            x1, x2 = sorted(r.sample(range(0, w + 1), 2))
            y1, y2 = sorted(r.sample(range(0, h + 1), 2))
            out.append([float(x1), float(y1), float(x2), float(y2)])
    for _ in range(12):
        x1, x2 = sorted(r.uniform(0, w) for _ in range(2))
        y1, y2 = sorted(r.uniform(0, h) for _ in range(2))
        out.append([x1, y1, x2, y2])
    return [b for b in out if 0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h]


def quantize(processor, box: list[float], w: int, h: int) -> list[int]:
    import torch

    return processor.post_processor.quantize(torch.tensor([box], dtype=torch.float64), (w, h))[0].tolist()


def loc_string(loc: list[int]) -> str:
    return "".join(f"<loc_{v}>" for v in loc)


def text_inputs(seed: int) -> list[str]:
    fixed = ["wheels", "car", "a car", "A green car parked in front of a yellow building.", "  padded input \t\n",
             "\u3000full-width space\u3000", "naïve café", "東京タワー", "emoji 🚗👩🏽‍🚒", "it's a dog's life",
             "x" * 300, "<loc_5> thing <loc_999>", "<poly>", "trailing space ", "\x85nel\x85", "\x1cinfo sep\x1f",
             "\u200bzwsp\u200b", "multi\nline\ntext", "\xa0nbsp\xa0", "<s>inner</s>", " <mask> hidden", "a"]
    gen = Gen(seed + 2)
    out = list(fixed)
    while len(out) < len(fixed) + 30:
        s = gen.mixed()
        if s.strip() and not any(t in s for t in TASK_TOKENS):
            out.append(s)
    return out


def prompt_records(processor, seed: int) -> Iterator[dict]:
    from PIL import Image

    r = random.Random(seed + 3)
    images: dict[tuple[int, int], Image.Image] = {}

    def run(task: str, inp: str, box, w: int, h: int) -> dict:
        if (w, h) not in images:
            images[(w, h)] = Image.new("RGB", (w, h), (120, 30, 200))
        full = processor(text=task + inp, images=images[(w, h)], return_tensors="pt")["input_ids"][0].tolist()
        n_image = sum(1 for t in full if t == processor.image_token_id)
        assert n_image == 577 and full[:577] == [processor.image_token_id] * 577, task
        return {"kind": "prompt", "task": task, "text": "" if box is not None else inp, "box": box, "width": w,
                "height": h, "prompt": processor._construct_prompts([task + inp])[0], "ids": full[577:]}

    inputs = text_inputs(seed)
    for task, kind in TASKS:
        if kind == "none":
            for w, h in [(640, 480), (1, 1)]:
                yield run(task, "", None, w, h)
        elif kind == "text":
            for inp in inputs:
                yield run(task, inp, None, 640, 480)
        else:
            for w, h in IMAGE_SIZES:
                for box in r.sample(boxes_for(r, w, h), 3):
                    yield run(task, loc_string(quantize(processor, box, w, h)), box, w, h)


def region_records(processor, seed: int) -> Iterator[dict]:
    r = random.Random(seed + 4)
    for w, h in IMAGE_SIZES + [(r.randint(1, 5000), r.randint(1, 5000)) for _ in range(30)]:
        for box in boxes_for(r, w, h):
            yield {"kind": "region", "width": w, "height": h, "box": box, "loc": quantize(processor, box, w, h)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, required=True,
                    help="tokenizer.json of an exported model directory (its directory also feeds the processor)")
    ap.add_argument("--out", type=Path, required=True, help="JSONL file to write (replaced)")
    ap.add_argument("--count", type=int, default=12000, help="number of text strings (default 12000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--emit-unicode-classes", type=Path, metavar="CC_FILE",
                    help="only (re)write the C++ letter/number tables (engine/tokenizer/unicode_classes.cc)")
    args = ap.parse_args(argv)

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(args.tokenizer))
    if args.emit_unicode_classes:
        emit_unicode_classes(char_classes(tok), args.emit_unicode_classes)
        print(f"wrote {args.emit_unicode_classes}")
        return 0

    from conftest import hf_processor  # tests/tools/conftest.py

    processor = hf_processor(args.tokenizer.parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    counts: dict[str, int] = {}
    with tmp.open("w", encoding="utf-8") as f:
        for gen in (iter([{"kind": "classes", **char_classes(tok)}]), text_records(tok, args.count, args.seed), decode_records(tok, 2000, args.seed),
                    region_records(processor, args.seed), prompt_records(processor, args.seed)):
            for rec in gen:
                f.write(json.dumps(rec) + "\n")
                counts[rec["kind"]] = counts.get(rec["kind"], 0) + 1
    tmp.replace(args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
