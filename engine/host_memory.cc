#include "engine/host_memory.h"

#include <dlfcn.h>
#include <sys/resource.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace florence::engine {
namespace {

// LibTorch's switch (c10/core/alloc_cpu.cpp), read once at its first allocation.
constexpr char kTorchThpSwitch[] = "THP_MEM_ALLOC_ENABLE";

}  // namespace

bool PreferHugePages(bool enable) {
  // overwrite = 0: an operator's explicit setting stays.
  setenv(kTorchThpSwitch, enable ? "1" : "0", /*overwrite=*/0);
  const char* value = std::getenv(kTorchThpSwitch);
  const std::string v = value == nullptr ? "" : value;
  return v == "1" || v == "true" || v == "TRUE";
}

std::string TransparentHugePageMode() {
  // One line such as "always [madvise] never": the bracketed word is the mode.
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  if (!std::getline(in, line)) return "";
  const size_t open = line.find('[');
  const size_t close = line.find(']', open);
  if (open == std::string::npos || close == std::string::npos) return "";
  return line.substr(open + 1, close - open - 1);
}

std::string MallocName() {
  return dlsym(RTLD_DEFAULT, "tc_malloc") != nullptr ? "tcmalloc" : "glibc";
}

int64_t MinorPageFaults() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
  return usage.ru_minflt;
}

int64_t AnonHugePageBytes() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("AnonHugePages:", 0) != 0) continue;
    std::istringstream fields(line.substr(sizeof("AnonHugePages:") - 1));
    int64_t kib = -1;
    std::string unit;
    if (fields >> kib >> unit && unit == "kB" && kib >= 0) return kib * 1024;
    return -1;
  }
  return -1;
}

}  // namespace florence::engine
