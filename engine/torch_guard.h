// The engine's exception boundary, shared by the model backends
// (TorchScriptModel, AotiModel): runs a LibTorch call under InferenceMode and
// turns any exception it throws into an absl::Status naming the method, so no
// Torch exception passes into the batcher or the server. Engine-internal
// (includes c10).
#ifndef FLORENCE_ENGINE_TORCH_GUARD_H_
#define FLORENCE_ENGINE_TORCH_GUARD_H_

#include <c10/core/InferenceMode.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <exception>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace florence::engine {

// fn() under InferenceMode; out of (device) memory -> ResourceExhausted, any
// other Torch error, a TorchScript `raise` (JITException), std::bad_alloc ...
// -> Internal, each prefixed with `method`.
template <typename Fn>
auto Guarded(absl::string_view method, Fn&& fn)
    -> absl::StatusOr<decltype(fn())> {
  try {
    c10::InferenceMode guard;
    return fn();
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(method, ": ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(method, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(method, ": ", e.what()));
  }
}

// A torch device string ("cpu", "cuda", "cuda:1") parsed, or InvalidArgument.
// Whether the device exists is the caller's check.
inline absl::StatusOr<c10::Device> ParseDevice(const std::string& name) {
  try {
    return c10::Device(name);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid device \"", name, "\""));
  }
}

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_TORCH_GUARD_H_
