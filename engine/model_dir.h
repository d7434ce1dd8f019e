// A model directory written by tools/florence2_export.py, checked and parsed.
//
// Layout: config.json (what the server needs to drive the model), manifest.json
// (sha256 and size of every file), the TorchScript artefact (config.json
// "model_file", normally model.ts) and tokenizer.json. LoadModelDir verifies
// every file the manifest lists before anything is parsed or loaded, so a
// truncated copy or a file edited after export is refused at start-up instead
// of misbehaving at run time.
//
// Torch-free on purpose: the server reads this without linking LibTorch.
#ifndef FLORENCE_ENGINE_MODEL_DIR_H_
#define FLORENCE_ENGINE_MODEL_DIR_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace florence::engine {

// The config.json "interface_version" this engine drives
// (tools/florence2/export.py INTERFACE_VERSION).
inline constexpr int kInterfaceVersion = 2;

// Shape of the decoder; a self-attention cache is [layers, batch, heads,
// max_len, head_dim].
struct DecoderConfig {
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  int64_t max_positions =
      0;  // bound on the decoder length (and on the encoder length)
};

// Special token ids (config.json "tokens").
struct TokenIds {
  int64_t bos = 0;
  int64_t pad = 0;
  int64_t eos = 0;
  int64_t unk = 0;
  int64_t image = 0;
  int64_t loc_first =
      0;  // <loc_0>; location tokens are [loc_first, loc_first + loc_count)
  int64_t loc_count = 0;
  int64_t real_vocab_size =
      0;  // ids >= this are padding rows of the embedding and never generated
};

// Image preprocessing (config.json "preprocess"): resize to size x size, scale
// by rescale_factor, then normalize per channel with mean/std (RGB order).
struct PreprocessConfig {
  int64_t size = 0;
  std::string resample;  // "bicubic"
  double rescale_factor = 0;
  std::array<double, 3> mean = {};
  std::array<double, 3> std = {};
};

// Decoding defaults carried by the checkpoint (config.json "generation").
struct GenerationDefaults {
  int64_t num_beams = 0;
  int64_t no_repeat_ngram_size = 0;
  bool early_stopping = false;
  double length_penalty = 0;
  int64_t max_new_tokens = 0;
  int64_t decoder_start_token_id = 0;
  int64_t forced_bos_token_id = 0;
  int64_t forced_eos_token_id = 0;
};

struct ModelDir {
  std::string dir;             // the directory as given to LoadModelDir
  std::string model_path;      // dir/<config "model_file">, checksum verified
  std::string tokenizer_path;  // dir/tokenizer.json, checksum verified
  // Weight format: "float32", "float16", "bfloat16", or "int8" (int8 linear
  // weights and per-row int8 activations, float32 elsewhere; CPU only).
  std::string dtype;
  // The vision tower's float dtype: the weights' unless exported with
  // --vision-dtype (float32 for int8 by default).
  std::string vision_dtype;
  int interface_version = 0;  // == kInterfaceVersion
  int64_t num_image_tokens = 0;
  DecoderConfig decoder;
  TokenIds tokens;
  PreprocessConfig preprocess;
  GenerationDefaults generation;
};

// Verifies and parses the model directory `dir`. Reads every file the manifest
// lists (hashing a large model takes a few seconds), so call it once at
// start-up. Errors name the offending file:
//   NotFound         `dir`, config.json, manifest.json or a file the manifest
//   lists does not exist; DataLoss         a file's size or sha256 differs from
//   manifest.json; InvalidArgument  malformed JSON, a missing/mistyped key, an
//   unsupported interface_version, or a manifest
//                    that does not cover config.json, tokenizer.json and the
//                    model file.
absl::StatusOr<ModelDir> LoadModelDir(const std::string& dir);

// Lower-case hex SHA-256 of the file at `path` (NotFound if missing, other
// errno-derived codes on I/O errors).
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_MODEL_DIR_H_
