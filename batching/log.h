// Logging for code that includes Torch headers. The PyTorch wheel ships its
// own fmt headers on Torch's include path, which clash with the system fmt
// that Debian's spdlog is built against; so Torch-including translation units
// format with absl::StrCat and log through these functions, implemented in a
// Torch-free library over spdlog. Thread-safe.
#ifndef FLORENCE_BATCHING_LOG_H_
#define FLORENCE_BATCHING_LOG_H_

#include "absl/strings/string_view.h"

namespace florence::log {

void Debug(absl::string_view message);
void Info(absl::string_view message);
void Warn(absl::string_view message);
void Error(absl::string_view message);

}  // namespace florence::log

#endif  // FLORENCE_BATCHING_LOG_H_
