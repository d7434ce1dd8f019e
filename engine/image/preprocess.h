// Florence-2's image preprocessing in C++, reproducing transformers'
// CLIPImageProcessor (PIL backend) as Florence-2 configures it
// (docs/FLORENCE2.md §2.1):
//   1. resize to size x size, aspect ratio NOT kept, with PIL's
//      Image.resize(..., BICUBIC) -- ported from Pillow's Resample.c, so the
//      uint8 result is bit-identical: bicubic a = -0.5, support scaled by the
//      scale factor when downsampling (antialiasing), 22-bit fixed-point
//      coefficients, two passes each rounded and clipped to uint8 --
//      horizontal then vertical, except vertical first when the height
//      shrinks and the width does not (Pillow >= 13; older Pillow always went
//      horizontal first, so parity is with the pinned pillow==13.0.0);
//   2. x = float32(uint8 * rescale_factor) (computed in double, as numpy
//      does);
//   3. (x - mean[c]) / std[c] in float32;
//   4. channels first: out[c * size * size + y * size + x].
// The output equals the processor's pixel_values bit for bit.
//
// Torch-free: the engine wraps the buffer in a tensor (torch::from_blob) or
// writes straight into a batch. Thread-safe; no global state.
#ifndef FLORENCE_ENGINE_IMAGE_PREPROCESS_H_
#define FLORENCE_ENGINE_IMAGE_PREPROCESS_H_

#include <cstddef>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/image/decode.h"
#include "engine/model_dir.h"

namespace florence::engine {

// PIL's image.resize((width, height), Image.BICUBIC) for an RGB image.
// Requires image.width, image.height, width, height > 0.
RgbImage ResizeBicubic(const RgbImage& image, int width, int height);

// OK if Preprocess can run `config`: size in [1, 8192], resample "bicubic",
// rescale_factor > 0, std all non-zero. InvalidArgument naming the field
// otherwise.
absl::Status ValidatePreprocessConfig(const PreprocessConfig& config);

// Number of floats Preprocess writes: 3 * size * size.
inline size_t PreprocessedSize(const PreprocessConfig& config) {
  return size_t{3} * static_cast<size_t>(config.size) *
         static_cast<size_t>(config.size);
}

// Writes the normalized [3, size, size] float32 image into `out`, which must
// hold exactly PreprocessedSize(config) floats. InvalidArgument for an invalid
// config, a wrong-sized `out` or an empty image.
absl::Status PreprocessInto(const RgbImage& image,
                            const PreprocessConfig& config,
                            absl::Span<float> out);

// The aspect-preserving alternative (not transformers' preprocessing, so not
// part of its parity): the image is resized with the same bicubic so that its
// longer side fills `size`, placed at the top-left of a size x size canvas,
// normalized like PreprocessInto, and the rest of the canvas is 0 (the
// normalized mean colour). The canvas then stands for a square of
// max(width, height) original pixels, so location bins map back to original
// pixels with that side. Returns the content's size on the canvas.
struct Letterbox {
  int content_width = 0;   // pixels of the canvas holding the image
  int content_height = 0;
  int canvas_side = 0;     // max(width, height): the canvas in original pixels
};
absl::StatusOr<Letterbox> PreprocessLetterboxInto(const RgbImage& image,
                                                  const PreprocessConfig& config,
                                                  absl::Span<float> out);

// Which of the model's image tokens see the letterboxed content: token 0 (the
// pooled token) and every `patch` x `patch` cell of the canvas (row-major,
// size / patch per side) that overlaps the content; 0 for cells wholly in
// the padding, which the encoder then masks out.
std::vector<uint8_t> LetterboxTokenMask(const Letterbox& box, int size, int patch);

// As PreprocessInto, into a new buffer.
absl::StatusOr<std::vector<float>> Preprocess(const RgbImage& image,
                                              const PreprocessConfig& config);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_IMAGE_PREPROCESS_H_
