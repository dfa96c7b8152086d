// Early-return helpers for absl::Status and absl::StatusOr (Abseil 20220623
// ships none).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TOOLMESH_STATUS_CONCAT_INNER_(a, b) a##b
#define TOOLMESH_STATUS_CONCAT_(a, b) TOOLMESH_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the caller if not OK.
#define TOOLMESH_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    ::absl::Status toolmesh_status_ = (expr);            \
    if (!toolmesh_status_.ok()) return toolmesh_status_; \
  } while (false)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its status.
#define TOOLMESH_ASSIGN_OR_RETURN(lhs, rexpr)                              \
  TOOLMESH_ASSIGN_OR_RETURN_IMPL_(                                         \
      TOOLMESH_STATUS_CONCAT_(toolmesh_statusor_, __LINE__), lhs, rexpr)

#define TOOLMESH_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();    \
  lhs = std::move(statusor).value()
