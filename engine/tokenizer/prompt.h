// Florence-2 prompts: the text transformers' Florence2Processor builds for a
// task and its input (FLORENCE2.md 2.2-2.4), and its token ids.
//
//   BuildPrompt(Task::kOpenVocabularyDetection, "  wheels ", {}, 640, 480)
//     == "Locate wheels in the image."
//   BuildPrompt(Task::kRegionToCategory, "",
//               RegionBox{33.3, 159.4, 596.5, 371.6}, 640, 480)
//     == "What is the region <loc_52><loc_332><loc_932><loc_774>?"
//
// Differences from the processor, all refusals (InvalidArgument) of requests
// it would reject or silently mangle: text for a task that takes none (the
// processor raises), text containing a task token such as "<OD>" (the
// processor raises or rewrites the prompt), empty text where text is required
// (the processor would send "Locate  in the image."), text for a region task
// (the region is passed as a RegionBox, not as "<loc_..>" text) and invalid
// regions.
//
// Pure functions, thread-safe.
#ifndef FLORENCE_ENGINE_TOKENIZER_PROMPT_H_
#define FLORENCE_ENGINE_TOKENIZER_PROMPT_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/task.h"
#include "engine/tokenizer/tokenizer.h"

namespace florence::engine {

// A region input: a box in pixels of the ORIGINAL image (before the 768x768
// resize): (x1, y1) top-left, (x2, y2) bottom-right, 0 <= x1 < x2 <= width
// and 0 <= y1 < y2 <= height. Doubles, as the caller sent them; distinct from
// the float Box of parsed results (engine/postprocess/parse.h).
struct RegionBox {
  double x1 = 0;
  double y1 = 0;
  double x2 = 0;
  double y2 = 0;
};

// Location bins per axis; <loc_N> for N in [0, kLocationBins).
inline constexpr int kLocationBins = 1000;

// Image tokens the projector puts in front of the prompt (768x768 input).
inline constexpr int kNumImageTokens = 577;

// The four location bins of `box`, as the processor's quantize():
// floor(x / (width / 1000)) clamped to [0, 999], likewise y with height,
// computed in double precision (= quantize() on a float64 tensor).
// InvalidArgument, naming the value, if the image size is not positive or the
// box is not finite, not inside the image or empty.
absl::StatusOr<std::array<int, 4>> QuantizeBox(const RegionBox& box,
                                               int image_width,
                                               int image_height);

// "<loc_a><loc_b><loc_c><loc_d>".
std::string LocationTokens(const std::array<int, 4>& bins);

// The prompt text for `task` (SpecOf(task).prompt with its input):
//  - TaskInput::kNone: `text` must be empty and `region` absent;
//  - TaskInput::kText: `text` is stripped of leading/trailing whitespace as
//    Python's str.strip() does, must not be empty then, and must not contain a
//    task token; `region` must be absent;
//  - TaskInput::kRegion: `region` is required and quantized against the image
//    size; `text` must be empty.
// `text` must be UTF-8 and the image size positive (checked for every task).
absl::StatusOr<std::string> BuildPrompt(Task task, absl::string_view text,
                                        std::optional<RegionBox> region,
                                        int image_width, int image_height);

// The encoder's text ids: <s> + BPE(BuildPrompt(...)) + </s>, exactly the
// processor's input_ids after its image tokens. InvalidArgument if
// num_image_tokens + that length exceeds `max_positions` (the model's
// position table, DecoderConfig::max_positions), saying by how many tokens.
absl::StatusOr<std::vector<int32_t>> EncodePrompt(
    const Tokenizer& tokenizer, Task task, absl::string_view text,
    std::optional<RegionBox> region, int image_width, int image_height,
    int max_positions, int num_image_tokens = kNumImageTokens);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_TOKENIZER_PROMPT_H_
