// Project-wide helpers for absl::Status (the installed Abseil has none).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the current function if `expr` (an absl::Status) is not OK.
#define SIPD_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status sipd_status_ = (expr);        \
    if (!sipd_status_.ok()) return sipd_status_; \
  } while (0)

#define SIPD_CONCAT_INNER_(a, b) a##b
#define SIPD_CONCAT_(a, b) SIPD_CONCAT_INNER_(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status on error, else moves
// the value into `lhs` (a declaration or an lvalue).
#define SIPD_ASSIGN_OR_RETURN(lhs, rexpr) \
  SIPD_ASSIGN_OR_RETURN_IMPL_(SIPD_CONCAT_(sipd_statusor_, __LINE__), lhs, rexpr)
#define SIPD_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()
