// PreferHugePages through LibTorch's own CPU allocator: each test runs in its
// own process (gtest_discover_tests), so the switch is set before this
// process's first tensor, as in the binaries' main().
#include "engine/host_memory.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace florence::engine {
namespace {

constexpr int64_t kTensorBytes = int64_t{64} << 20;

// Allocates and writes kTensorBytes through LibTorch; returns the growth of
// AnonHugePages while the tensor lives.
int64_t HugeBytesGainedByOneTensor() {
  const int64_t before = AnonHugePageBytes();
  at::Tensor t = at::empty({kTensorBytes / 4}, at::kFloat);
  t.fill_(1.0f);  // fault every page in
  const int64_t after = AnonHugePageBytes();
  EXPECT_FLOAT_EQ(t.sum().item<float>(), static_cast<float>(kTensorBytes / 4));
  return after - before;
}

TEST(HostMemory, ReadsTheKernelsAnswers) {
  const std::string mode = TransparentHugePageMode();
  if (mode.empty()) GTEST_SKIP() << "no /sys/kernel/mm/transparent_hugepage on this kernel";
  EXPECT_TRUE(mode == "always" || mode == "madvise" || mode == "never") << mode;
  EXPECT_GE(AnonHugePageBytes(), 0) << "smaps_rollup has no AnonHugePages line";
}

TEST(HostMemory, LargeTensorsLandOnHugePagesWhenPreferred) {
  unsetenv("THP_MEM_ALLOC_ENABLE");
  ASSERT_TRUE(PreferHugePages(true));
  const std::string mode = TransparentHugePageMode();
  if (mode != "madvise" && mode != "always") {
    GTEST_SKIP() << "the kernel's THP mode is '" << mode << "': huge pages cannot be asked for";
  }
  // At least half the tensor: its 2 MiB-aligned interior is eligible, the
  // kernel may still fall back to small pages when memory is fragmented.
  EXPECT_GE(HugeBytesGainedByOneTensor(), kTensorBytes / 2);
}

TEST(HostMemory, SwitchedOffTensorsStayOnSmallPagesUnderMadvise) {
  unsetenv("THP_MEM_ALLOC_ENABLE");
  ASSERT_FALSE(PreferHugePages(false));
  if (TransparentHugePageMode() != "madvise") {
    GTEST_SKIP() << "only under THP mode madvise does the allocator's request decide";
  }
  EXPECT_LT(HugeBytesGainedByOneTensor(), kTensorBytes / 4);
}

TEST(HostMemory, TheBinariesMallocIsTheOneCMakeChose) {
#ifdef FLORENCE_WITH_TCMALLOC
  EXPECT_EQ(MallocName(), "tcmalloc");
#else
  EXPECT_EQ(MallocName(), "glibc");
#endif
}

// Why the binaries link tcmalloc: a large tensor freed and allocated again
// (the vision tower's activations, call after call) reuses memory the
// process already holds instead of faulting in fresh zeroed pages.
TEST(HostMemory, ARepeatedLargeTensorReusesItsMemory) {
  if (MallocName() != "tcmalloc") GTEST_SKIP() << "built without tcmalloc (FLORENCE_TCMALLOC)";
  const int64_t pages = kTensorBytes / 4096;
  auto fill_once = [] {
    at::Tensor t = at::empty({kTensorBytes / 4}, at::kFloat);
    t.fill_(2.0f);
    return t.sum().item<float>();
  };
  const int64_t start = MinorPageFaults();
  EXPECT_FLOAT_EQ(fill_once(), 2.0f * (kTensorBytes / 4));
  const int64_t first = MinorPageFaults() - start;
  EXPECT_FLOAT_EQ(fill_once(), 2.0f * (kTensorBytes / 4));
  const int64_t second = MinorPageFaults() - start - first;
  EXPECT_GT(first, 0);  // the first time the pages are new
  EXPECT_LT(second, pages / 16) << "first allocation: " << first << " faults";
}

TEST(HostMemory, AnExplicitEnvironmentSettingWins) {
  setenv("THP_MEM_ALLOC_ENABLE", "0", 1);
  EXPECT_FALSE(PreferHugePages(true));
  setenv("THP_MEM_ALLOC_ENABLE", "1", 1);
  EXPECT_TRUE(PreferHugePages(false));
}

}  // namespace
}  // namespace florence::engine
