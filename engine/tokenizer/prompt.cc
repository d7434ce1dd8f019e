#include "engine/tokenizer/prompt.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/status_macros.h"
#include "engine/tokenizer/utf8.h"

namespace florence::engine {
namespace {

// Shortest text that reads back as `v` ("640", "0.1", "nan"), so messages show
// the value the caller sent rather than a rounded one.
std::string Num(double v) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), v);
  return std::string(buffer, result.ptr);
}

std::string BoxString(const RegionBox& b) {
  return absl::StrCat("(", Num(b.x1), ", ", Num(b.y1), ", ", Num(b.x2), ", ",
                      Num(b.y2), ")");
}

// User text quoted for an error message: at most 80 bytes, control
// characters and quotes escaped.
std::string Quote(absl::string_view text) {
  absl::string_view head = utf8::TruncateAtCodePoint(text, 80);
  return absl::StrCat("\"", absl::Utf8SafeCEscape(head), "\"",
                      head.size() < text.size() ? "..." : "");
}

absl::Status CheckImageSize(int width, int height) {
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image size ", width, "x", height,
        " is invalid: width and height must be positive (pixels of the "
        "original image)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::array<int, 4>> QuantizeBox(const RegionBox& box,
                                               int image_width,
                                               int image_height) {
  FLORENCE_RETURN_IF_ERROR(CheckImageSize(image_width, image_height));
  const std::string where =
      absl::StrCat("region ", BoxString(box), " on a ", image_width, "x",
                   image_height, " image");
  const std::array<std::pair<const char*, double>, 4> coords = {
      {{"x1", box.x1}, {"y1", box.y1}, {"x2", box.x2}, {"y2", box.y2}}};
  for (const auto& [name, value] : coords) {
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": ", name, " = ", Num(value), " is not a finite number"));
    }
  }
  auto outside = [&](const char* name, double value, int limit,
                     const char* axis) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", name, " = ", Num(value),
                     " is outside the image (0..", limit, " ", axis,
                     "); boxes are (x1, y1, x2, y2) in pixels of the "
                     "original image"));
  };
  if (box.x1 < 0 || box.x1 > image_width)
    return outside("x1", box.x1, image_width, "wide");
  if (box.x2 < 0 || box.x2 > image_width)
    return outside("x2", box.x2, image_width, "wide");
  if (box.y1 < 0 || box.y1 > image_height)
    return outside("y1", box.y1, image_height, "high");
  if (box.y2 < 0 || box.y2 > image_height)
    return outside("y2", box.y2, image_height, "high");
  if (box.x2 <= box.x1) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": x2 = ", Num(box.x2),
        " must be greater than x1 = ", Num(box.x1),
        " (x1, y1 is the top-left corner, x2, y2 the bottom-right)"));
  }
  if (box.y2 <= box.y1) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": y2 = ", Num(box.y2),
        " must be greater than y1 = ", Num(box.y1),
        " (x1, y1 is the top-left corner, x2, y2 the bottom-right)"));
  }
  // As quantize(): divide by the bin size (not multiply by bins / size; the
  // two round differently on bin edges), floor, clamp (x == width -> 999).
  const double bin_w = static_cast<double>(image_width) / kLocationBins;
  const double bin_h = static_cast<double>(image_height) / kLocationBins;
  auto bin = [](double v, double size) {
    const double q = std::floor(v / size);
    return static_cast<int>(std::clamp(q, 0.0, kLocationBins - 1.0));
  };
  return std::array<int, 4>{bin(box.x1, bin_w), bin(box.y1, bin_h),
                            bin(box.x2, bin_w), bin(box.y2, bin_h)};
}

std::string LocationTokens(const std::array<int, 4>& bins) {
  return absl::StrCat("<loc_", bins[0], "><loc_", bins[1], "><loc_", bins[2],
                      "><loc_", bins[3], ">");
}

absl::StatusOr<std::string> BuildPrompt(Task task, absl::string_view text,
                                        std::optional<RegionBox> region,
                                        int image_width, int image_height) {
  const TaskSpec& spec = SpecOf(task);
  FLORENCE_RETURN_IF_ERROR(CheckImageSize(image_width, image_height));
  if (!utf8::IsValid(text)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text for ", spec.token, " is not valid UTF-8: \"",
        absl::CHexEscape(utf8::TruncateAtCodePoint(text, 80)), "\""));
  }
  if (region.has_value() && spec.input != TaskInput::kRegion) {
    return absl::InvalidArgumentError(absl::StrCat(
        spec.token, " takes no region, but got ", BoxString(*region),
        "; region tasks are <REGION_TO_SEGMENTATION>, <REGION_TO_CATEGORY>, "
        "<REGION_TO_DESCRIPTION> and <REGION_TO_OCR>"));
  }
  switch (spec.input) {
    case TaskInput::kNone:
      if (!text.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(spec.token, " takes no text input, but got ",
                         Quote(text), "; send the task alone"));
      }
      return std::string(spec.prompt);

    case TaskInput::kText: {
      // The processor strips the input (Python str.strip()).
      const absl::string_view input = utf8::PythonStrip(text);
      if (input.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            spec.token, " needs a text input (",
            task == Task::kPhraseGrounding ? "the caption to ground"
                                           : "what to look for",
            "), but got ", text.empty() ? "none" : Quote(text)));
      }
      for (const TaskSpec& other : kTaskSpecs) {
        if (absl::StrContains(input, other.token)) {
          return absl::InvalidArgumentError(
              absl::StrCat("text for ", spec.token, " contains the task token ",
                           other.token, ": ", Quote(text),
                           "; pass the task as the task, not in the text"));
        }
      }
      return absl::StrReplaceAll(spec.prompt, {{"{input}", input}});
    }

    case TaskInput::kRegion: {
      if (!text.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(spec.token, " takes a region, not text, but got text ",
                         Quote(text), "; pass the box as the region"));
      }
      if (!region.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat(spec.token,
                         " needs a region: a box (x1, y1, x2, y2) in pixels of "
                         "the original image"));
      }
      absl::StatusOr<std::array<int, 4>> bins =
          QuantizeBox(*region, image_width, image_height);
      if (!bins.ok()) return bins.status();
      return absl::StrReplaceAll(spec.prompt,
                                 {{"{input}", LocationTokens(*bins)}});
    }
  }
  return absl::InternalError("unknown TaskInput");
}

absl::StatusOr<std::vector<int32_t>> EncodePrompt(
    const Tokenizer& tokenizer, Task task, absl::string_view text,
    std::optional<RegionBox> region, int image_width, int image_height,
    int max_positions, int num_image_tokens) {
  FLORENCE_ASSIGN_OR_RETURN(
      std::string prompt,
      BuildPrompt(task, text, region, image_width, image_height));
  std::vector<int32_t> ids =
      tokenizer.Encode(prompt, /*add_special_tokens=*/true);
  const int64_t length = num_image_tokens + static_cast<int64_t>(ids.size());
  if (length > max_positions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt for ", SpecOf(task).token, " is ", ids.size(),
        " tokens (with <s> and </s>); with the ", num_image_tokens,
        " image tokens that is ", length, ", ", length - max_positions,
        " tokens over the model's limit of ", max_positions,
        " positions; shorten the text"));
  }
  return ids;
}

}  // namespace florence::engine
