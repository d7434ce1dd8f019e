// Early-return helpers for absl::Status / absl::StatusOr; the Abseil we build
// against (20220623) has none.
//
// TODO: move to a shared util/ target once a second component needs them.
#ifndef FLORENCE_ENGINE_STATUS_MACROS_H_
#define FLORENCE_ENGINE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status) once; returns it from the enclosing
// function if it is not OK.
#define FLORENCE_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    const ::absl::Status florence_status_ = (expr);      \
    if (!florence_status_.ok()) return florence_status_; \
  } while (false)

// `lhs = std::move(*rexpr)` where `rexpr` is an absl::StatusOr<T>; returns its
// status if it is not OK. `lhs` may declare a variable:
// FLORENCE_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
#define FLORENCE_ASSIGN_OR_RETURN(lhs, rexpr) \
  FLORENCE_ASSIGN_OR_RETURN_IMPL_(            \
      FLORENCE_STATUS_CONCAT_(florence_statusor_, __LINE__), lhs, rexpr)

#define FLORENCE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();    \
  lhs = std::move(statusor).value()

#define FLORENCE_STATUS_CONCAT_INNER_(a, b) a##b
#define FLORENCE_STATUS_CONCAT_(a, b) FLORENCE_STATUS_CONCAT_INNER_(a, b)

#endif  // FLORENCE_ENGINE_STATUS_MACROS_H_
