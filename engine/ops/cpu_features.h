// The CPU's instruction-set extensions the operators pick kernels by (x86-64 with GCC or Clang; false elsewhere).
#ifndef FLORENCE_ENGINE_OPS_CPU_FEATURES_H_
#define FLORENCE_ENGINE_OPS_CPU_FEATURES_H_

namespace florence::ops {

inline bool CpuHasAvx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

inline bool CpuHasAvx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

}  // namespace florence::ops

#endif  // FLORENCE_ENGINE_OPS_CPU_FEATURES_H_
