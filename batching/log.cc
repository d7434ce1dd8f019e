#include "batching/log.h"

#include <spdlog/spdlog.h>

namespace florence::log {

void Debug(absl::string_view message) {
  spdlog::debug("{}", std::string_view(message.data(), message.size()));
}
void Info(absl::string_view message) {
  spdlog::info("{}", std::string_view(message.data(), message.size()));
}
void Warn(absl::string_view message) {
  spdlog::warn("{}", std::string_view(message.data(), message.size()));
}
void Error(absl::string_view message) {
  spdlog::error("{}", std::string_view(message.data(), message.size()));
}

}  // namespace florence::log
