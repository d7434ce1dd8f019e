// Host-memory settings for LibTorch's CPU allocator and what the kernel made
// of them. Torch-free header; the binaries call PreferHugePages first thing in
// main, before the first tensor exists.
#ifndef FLORENCE_ENGINE_HOST_MEMORY_H_
#define FLORENCE_ENGINE_HOST_MEMORY_H_

#include <cstdint>
#include <string>

namespace florence::engine {

// Asks LibTorch's CPU allocator to back each allocation of 2 MiB or more with
// transparent huge pages (its THP_MEM_ALLOC_ENABLE switch: the block is 2 MiB
// aligned and madvise(MADV_HUGEPAGE)d). Why: a decode step touches the KV
// cache at one position of every row, layer and head — hundreds of scattered
// 256-byte pieces — and under a VM's nested paging each 4 KiB TLB miss there
// costs microseconds (docs/PERFORMANCE.md, "Huge pages").
//
// LibTorch reads the switch once, at its first CPU allocation: call this
// before any tensor exists. A THP_MEM_ALLOC_ENABLE already in the environment
// wins over `enable`. Returns whether the switch is on.
bool PreferHugePages(bool enable);

// The kernel's transparent-huge-page mode ("always", "madvise" or "never");
// empty when /sys does not say. Under "never" PreferHugePages changes nothing.
std::string TransparentHugePageMode();

// The malloc this process runs on: "tcmalloc" when tcmalloc's symbols are in
// it (the binaries link it, CMake's FLORENCE_TCMALLOC), else "glibc".
std::string MallocName();

// Minor page faults this process has taken so far (getrusage).
int64_t MinorPageFaults();

// Bytes of this process's anonymous memory backed by huge pages
// (AnonHugePages of /proc/self/smaps_rollup); -1 when the kernel does not say.
int64_t AnonHugePageBytes();

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_HOST_MEMORY_H_
