// Raises tiny thread-stack requests to 1 MiB, process-wide.
//
// Why: Debian's civetweb (the HTTP server inside prometheus-cpp's exposer)
// creates its threads with a fixed 100 KiB stack (pthread_attr_setstacksize,
// compiled in). glibc carves a thread's static TLS out of its stack, and the
// CUDA-enabled LibTorch wheel loads libraries with ~150 KB of static TLS
// (libcublasLt.so alone: 94 KB), so pthread_create fails with EINVAL and the
// /metrics endpoint cannot start ("null context when constructing
// CivetServer"). Defining the function in the executable (exported with
// --export-dynamic-symbol, see server/CMakeLists.txt) interposes it for every
// shared library; the call goes on to glibc's with the raised size.
#include <dlfcn.h>
#include <pthread.h>

#include <cstddef>

namespace {
constexpr size_t kMinStack = size_t{1} << 20;
}

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  if (real == nullptr) return 0;  // keep the default stack, which is large
  return real(attr, size < kMinStack ? kMinStack : size);
}

namespace florence::server {
// Referenced from metrics.cc so that this object is always linked with it.
int ThreadStackShimLinked() { return 1; }
}  // namespace florence::server
