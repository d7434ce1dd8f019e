// Each parser below names the transformers function whose behaviour it
// reproduces and the Python regex it stands for; the comments explain how the
// regex semantics (greedy/lazy matching, findall's scan, '.' not matching
// '\n', Unicode \s) translate into the hand-written scans.
#include "engine/postprocess/parse.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/postprocess/python_text.h"
#include "engine/task.h"

namespace florence::engine {
namespace {

namespace pt = python_text;

constexpr absl::string_view kBos = "<s>";
constexpr absl::string_view kEos = "</s>";
constexpr absl::string_view kPad = "<pad>";
constexpr absl::string_view kLocPrefix = "<loc_";
constexpr absl::string_view kSep = "<sep>";
constexpr absl::string_view kPolyStart = "<poly>";
constexpr absl::string_view kPolyEnd = "</poly>";

// Bins are saturated here while parsing digits (transformers fails beyond
// int64); any real bin is < 1000.
constexpr int64_t kMaxBin = 1'000'000'000'000;

// Phrases dropped by CAPTION_TO_PHRASE_GROUNDING: the "banned_grounding_tokens"
// of the post-processor config in transformers'
// convert_florence2_original_pytorch_to_hf.py (duplicates removed), compared
// case-sensitively with the stripped phrase before non-ASCII is dropped.
constexpr absl::string_view kBannedGroundingPhrases[] = {
    "it",         "I",           "me",        "mine",      "you",
    "your",       "yours",       "he",        "him",       "his",
    "she",        "her",         "hers",      "they",      "them",
    "their",      "theirs",      "one",       "oneself",   "we",
    "us",         "our",         "ours",      "its",       "myself",
    "yourself",   "himself",     "herself",   "itself",    "ourselves",
    "yourselves", "themselves",  "this",      "that",      "these",
    "those",      "who",         "whom",      "whose",     "which",
    "what",       "all",         "another",   "any",       "anybody",
    "anyone",     "anything",    "each",      "everybody", "everyone",
    "everything", "few",         "many",      "nobody",    "none",
    "several",    "some",        "somebody",  "someone",   "something",
    "each other", "one another", "the image", "image",     "images",
    "the",        "a",           "an",        "a group",   "other objects",
    "lots",       "a set",
};

bool IsBannedGroundingPhrase(absl::string_view phrase) {
  return std::find(std::begin(kBannedGroundingPhrases),
                   std::end(kBannedGroundingPhrases),
                   phrase) != std::end(kBannedGroundingPhrases);
}

struct ImageSize {
  int width;
  int height;
};

// The generation up to its end token; see parse.h.
absl::string_view CutAtEos(absl::string_view text) {
  const size_t start = absl::StartsWith(text, kEos) ? kEos.size() : 0;
  const size_t end = text.find(kEos, start);
  return end == absl::string_view::npos ? text : text.substr(0, end);
}

// What every structured parser does first:
// text.replace("<s>", "").replace("</s>", "").replace("<pad>", "").
std::string RemoveSpecialTokens(absl::string_view text) {
  return pt::RemoveAll(pt::RemoveAll(pt::RemoveAll(text, kBos), kEos), kPad);
}

// ---- Tokens
// -------------------------------------------------------------------

// "<loc_N>" (regex <loc_\d+>) at `pos`: where it ends and its bin.
struct LocToken {
  size_t end = 0;
  int64_t bin = 0;
};

std::optional<LocToken> LocAt(absl::string_view s, size_t pos) {
  if (pos > s.size() || !absl::StartsWith(s.substr(pos), kLocPrefix)) {
    return std::nullopt;
  }
  const size_t digits = pos + kLocPrefix.size();
  size_t i = digits;
  int64_t bin = 0;
  while (i < s.size() &&
         absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) {
    bin = std::min(bin * 10 + (s[i] - '0'), kMaxBin);
    ++i;
  }
  if (i == digits || i >= s.size() || s[i] != '>') return std::nullopt;
  return LocToken{i + 1, bin};
}

// Which tokens a run may contain: <loc_N> only, or also the polygon markers
// (regex (?:<loc_\d+>|<sep>|<poly>|</poly>)).
enum class TokenSet { kLocs, kPolygonTokens };

// End of the token of `set` at `pos`, or nullopt.
std::optional<size_t> TokenEndAt(absl::string_view s, size_t pos,
                                 TokenSet set) {
  if (std::optional<LocToken> loc = LocAt(s, pos)) return loc->end;
  if (set == TokenSet::kPolygonTokens) {
    const absl::string_view rest = s.substr(pos);
    for (const absl::string_view marker : {kSep, kPolyStart, kPolyEnd}) {
      if (absl::StartsWith(rest, marker)) return pos + marker.size();
    }
  }
  return std::nullopt;
}

// The longest run of tokens of `set` starting at `pos` (a greedy (?:...)+).
struct TokenRun {
  size_t count = 0;
  size_t end = 0;
};

TokenRun TokenRunAt(absl::string_view s, size_t pos, TokenSet set) {
  TokenRun run{0, pos};
  while (std::optional<size_t> end = TokenEndAt(s, run.end, set)) {
    run.end = *end;
    ++run.count;
  }
  return run;
}

// Bins of the consecutive <loc_N> tokens starting at `pos`, and where they end.
std::vector<int64_t> LocBinsAt(absl::string_view s, size_t pos,
                               size_t* end = nullptr) {
  std::vector<int64_t> bins;
  while (std::optional<LocToken> loc = LocAt(s, pos)) {
    bins.push_back(loc->bin);
    pos = loc->end;
  }
  if (end != nullptr) *end = pos;
  return bins;
}

// ---- Regex equivalents
// ----------------------------------------------------------

// re.findall(r"[^<]+(?:T){4,}") when `with_text`, else
// re.findall(r"(?:T){4,}"), T being the tokens of `set`; returns the whole
// matches.
//
// With text: [^<]+ can only end where a '<' follows, so a match starting at p
// needs >= 4 tokens right after the first '<' at or past p; a failed start
// fails for every later p before that '<', and the scan resumes after it
// (inside a tag: "car<loc_1><loc_2>x<loc_3>..." can yield the label
// "loc_2>x"). Without text: a match is a maximal run of >= 4 tokens.
std::vector<absl::string_view> FindPhrases(absl::string_view s, TokenSet set,
                                           bool with_text) {
  std::vector<absl::string_view> phrases;
  size_t pos = 0;
  while (pos < s.size()) {
    if (with_text && s[pos] == '<') {
      ++pos;
      continue;
    }
    const size_t tokens = s.find('<', pos);
    if (tokens == absl::string_view::npos) break;
    const TokenRun run = TokenRunAt(s, tokens, set);
    if (run.count >= 4) {
      const size_t start = with_text ? pos : tokens;
      phrases.push_back(s.substr(start, run.end - start));
      pos = run.end;
    } else {
      pos = with_text ? tokens : tokens + 1;
    }
  }
  return phrases;
}

// m = re.search(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_)",
// s) (plus "|<poly>" for polygons); returns m.group().strip(), nullopt if no
// match. The lazy (.*?) stops at the first stop token after the leading
// whitespace and cannot cross a '\n' ('.' does not match it), so a newline
// inside a label (not leading) loses the whole phrase.
std::optional<absl::string_view> LeadingPhrase(absl::string_view s,
                                               bool poly_stops) {
  static constexpr absl::string_view kStops[] = {
      "<od>", "</od>", "<box>", "</box>", "<bbox>", "</bbox>", "<loc_"};
  size_t k = 0;
  while (size_t n = pt::SpaceLengthAt(s, k)) k += n;
  for (; k < s.size(); ++k) {
    const absl::string_view rest = s.substr(k);
    bool stop = poly_stops && absl::StartsWith(rest, kPolyStart);
    for (const absl::string_view token : kStops) {
      stop = stop || absl::StartsWith(rest, token);
    }
    if (stop) return pt::Strip(s.substr(0, k));
    if (s[k] == '\n') return std::nullopt;
  }
  return std::nullopt;
}

// ---- Coordinates
// ------------------------------------------------------------------

Box DequantizeBox(const int64_t* bins, ImageSize size) {
  return Box{DequantizeCoordinate(bins[0], size.width),
             DequantizeCoordinate(bins[1], size.height),
             DequantizeCoordinate(bins[2], size.width),
             DequantizeCoordinate(bins[3], size.height)};
}

// (x, y) pairs; an odd trailing bin is dropped.
std::vector<float> DequantizePoints(const std::vector<int64_t>& bins,
                                    ImageSize size) {
  std::vector<float> coords;
  coords.reserve(bins.size());
  for (size_t i = 0; i + 2 <= bins.size(); i += 2) {
    coords.push_back(DequantizeCoordinate(bins[i], size.width));
    coords.push_back(DequantizeCoordinate(bins[i + 1], size.height));
  }
  return coords;
}

// ---- Parsers
// ------------------------------------------------------------------------

// parse_description_with_bboxes_from_text_and_spans (and, with
// `drop_banned`, parse_phrase_grounding_from_text_and_spans, which flattens to
// the same list). Each phrase gives one detection per complete group of four
// <loc_N>; leftover bins are ignored. transformers also removes one "<ground>"
// and one "<obj>" from each phrase first; neither can occur in a match (its
// only '<' open loc tokens), so that step is a no-op here.
std::vector<Detection> ParseBoxes(absl::string_view text, ImageSize size,
                                  bool allow_empty_phrase, bool drop_banned) {
  const std::string clean = RemoveSpecialTokens(text);
  std::vector<Detection> detections;
  for (const absl::string_view phrase_text :
       FindPhrases(clean, TokenSet::kLocs, !allow_empty_phrase)) {
    const std::optional<absl::string_view> phrase =
        LeadingPhrase(phrase_text, /*poly_stops=*/false);
    if (!phrase) continue;
    if (drop_banned && IsBannedGroundingPhrase(*phrase)) continue;
    const std::string label = pt::DropNonAscii(*phrase);
    const std::vector<int64_t> bins =
        LocBinsAt(phrase_text, phrase_text.find('<'));
    for (size_t i = 0; i + 4 <= bins.size(); i += 4) {
      detections.push_back(Detection{DequantizeBox(&bins[i], size), label});
    }
  }
  return detections;
}

// parse_ocr_from_text_and_spans: re.findall(r"(.+?)<loc_(\d+)>" x 8). The text
// is the shortest non-empty prefix, without '\n', that is followed by eight
// <loc_N>; it may itself hold loc tokens (seven locs merge into the next
// line's text). Texts are stripped but keep non-ASCII; area threshold 0.
std::vector<OcrRegion> ParseOcr(absl::string_view text, ImageSize size) {
  const std::string clean = RemoveSpecialTokens(text);
  const absl::string_view s = clean;
  std::vector<OcrRegion> regions;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t line_end = s.find('\n', pos);
    if (line_end == absl::string_view::npos) line_end = s.size();
    // Smallest k in [pos + 1, line_end] with eight loc tokens at k.
    std::optional<size_t> quad_start;
    for (size_t k = s.find('<', pos + 1);
         k != absl::string_view::npos && k <= line_end;
         k = s.find('<', k + 1)) {
      size_t end = k;
      int count = 0;
      while (count < 8) {
        std::optional<LocToken> loc = LocAt(s, end);
        if (!loc) break;
        end = loc->end;
        ++count;
      }
      if (count == 8) {
        quad_start = k;
        break;
      }
    }
    if (!quad_start) {
      // Every start up to the newline fails the same way; a match cannot
      // start on the newline either ('.' does not match it).
      pos = line_end + 1;
      continue;
    }
    OcrRegion region;
    region.text = std::string(pt::Strip(s.substr(pos, *quad_start - pos)));
    size_t end = *quad_start;
    for (int i = 0; i < 8; ++i) {
      const std::optional<LocToken> loc = LocAt(s, end);
      region.quad.points[i] =
          DequantizeCoordinate(loc->bin, i % 2 == 0 ? size.width : size.height);
      end = loc->end;
    }
    regions.push_back(std::move(region));
    pos = end;
  }
  return regions;
}

// re.finditer(r"((?:<loc_\d+>)+)(?:<sep>|$)", instance): maximal runs of loc
// tokens that end at <sep> or at the end of the instance ($ also before a
// final '\n'); runs followed by anything else are skipped.
std::vector<std::vector<float>> FindPolygons(absl::string_view instance,
                                             ImageSize size) {
  std::vector<std::vector<float>> polygons;
  size_t pos = 0;
  while (pos < instance.size()) {
    const size_t start = instance.find('<', pos);
    if (start == absl::string_view::npos) break;
    size_t end = start;
    const std::vector<int64_t> bins = LocBinsAt(instance, start, &end);
    if (bins.empty()) {
      pos = start + 1;
      continue;
    }
    const absl::string_view rest = instance.substr(end);
    if (absl::StartsWith(rest, kSep)) {
      polygons.push_back(DequantizePoints(bins, size));
      pos = end + kSep.size();
    } else if (rest.empty() || rest == "\n") {
      polygons.push_back(DequantizePoints(bins, size));
      pos = instance.size();
    } else {
      pos = end;
    }
  }
  return polygons;
}

// parse_description_with_polygons_from_text_and_spans (with_box_at_start
// false). Phrases are runs of >= 4 tokens among <loc_N>, <sep>, <poly>,
// </poly> (preceded by a label unless `allow_empty_phrase`). The label is read
// after dropping one leading <loc_N>, up to <loc_ or <poly>, so it can be
// "<sep>"; it keeps non-ASCII. With both <poly> and </poly> in the phrase each
// <poly>...</poly> is an instance, else the whole phrase (label included) is.
std::vector<PolygonInstance> ParsePolygons(absl::string_view text,
                                           ImageSize size,
                                           bool allow_empty_phrase) {
  const std::string clean = RemoveSpecialTokens(text);
  std::vector<PolygonInstance> instances;
  for (const absl::string_view phrase_text :
       FindPhrases(clean, TokenSet::kPolygonTokens, !allow_empty_phrase)) {
    absl::string_view label_text = phrase_text;
    if (std::optional<LocToken> first = LocAt(phrase_text, 0)) {
      label_text.remove_prefix(first->end);
    }
    if (label_text.empty() && !allow_empty_phrase) continue;
    const std::optional<absl::string_view> phrase =
        LeadingPhrase(label_text, /*poly_stops=*/true);
    if (!phrase) continue;

    std::vector<absl::string_view> poly_instances;
    if (absl::StrContains(phrase_text, kPolyStart) &&
        absl::StrContains(phrase_text, kPolyEnd)) {
      // re.finditer(r"<poly>(.*?)</poly>"); no '\n' can sit between tokens.
      size_t pos = 0;
      while (true) {
        const size_t open = phrase_text.find(kPolyStart, pos);
        if (open == absl::string_view::npos) break;
        const size_t body = open + kPolyStart.size();
        const size_t close = phrase_text.find(kPolyEnd, body);
        if (close == absl::string_view::npos) break;
        poly_instances.push_back(phrase_text.substr(body, close - body));
        pos = close + kPolyEnd.size();
      }
    } else {
      poly_instances.push_back(phrase_text);
    }

    for (const absl::string_view poly_instance : poly_instances) {
      std::vector<std::vector<float>> polygons =
          FindPolygons(poly_instance, size);
      if (polygons.empty()) continue;
      instances.push_back(
          PolygonInstance{std::move(polygons), std::string(*phrase)});
    }
  }
  return instances;
}

}  // namespace

float DequantizeCoordinate(int64_t bin, int size) {
  // torch: int64 bins + 0.5 -> float32; times the Python float size / 1000,
  // which torch narrows to float32 first.
  const float per_bin = static_cast<float>(static_cast<double>(size) / 1000.0);
  return (static_cast<float>(bin) + 0.5f) * per_bin;
}

absl::StatusOr<TaskResult> ParseGeneration(Task task,
                                           absl::string_view generated_text,
                                           int image_width, int image_height) {
  if (static_cast<size_t>(task) >= kTaskSpecs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown task ", static_cast<int>(task)));
  }
  if (image_width <= 0 || image_height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image size must be positive, got ", image_width, "x", image_height));
  }
  const ImageSize size{image_width, image_height};
  const absl::string_view text = CutAtEos(generated_text);

  switch (SpecOf(task).post_process) {
    case PostProcess::kPureText:
      // post_process_generation: .replace("<s>", "").replace("</s>", "")
      // .strip(); <pad> and loc tokens stay.
      return TaskResult(TextResult{std::string(
          pt::Strip(pt::RemoveAll(pt::RemoveAll(text, kBos), kEos)))});
    case PostProcess::kDescriptionWithBboxes:
      return TaskResult(DetectionResult{ParseBoxes(
          text, size, /*allow_empty_phrase=*/false, /*drop_banned=*/false)});
    case PostProcess::kBboxes:
      return TaskResult(DetectionResult{ParseBoxes(
          text, size, /*allow_empty_phrase=*/true, /*drop_banned=*/false)});
    case PostProcess::kPhraseGrounding:
      return TaskResult(DetectionResult{ParseBoxes(
          text, size, /*allow_empty_phrase=*/false, /*drop_banned=*/true)});
    case PostProcess::kOcr:
      return TaskResult(OcrResult{ParseOcr(text, size)});
    case PostProcess::kPolygons:
      return TaskResult(SegmentationResult{
          ParsePolygons(text, size, /*allow_empty_phrase=*/true)});
    case PostProcess::kDescriptionWithBboxesOrPolygons: {
      // The choice looks at the text before <s>/</s>/<pad> are removed.
      OpenVocabularyResult result;
      if (absl::StrContains(text, kPolyStart)) {
        result.polygons =
            ParsePolygons(text, size, /*allow_empty_phrase=*/false);
      } else {
        result.detections = ParseBoxes(text, size, /*allow_empty_phrase=*/false,
                                       /*drop_banned=*/false);
      }
      return TaskResult(std::move(result));
    }
  }
  return absl::InternalError("unhandled post-processing type");
}

}  // namespace florence::engine
