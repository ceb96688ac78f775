#include "csi/status_map.h"

#include <iterator>

#include "common/log.h"

namespace stepsnap::csi {

grpc::StatusCode code_for_agent_error(const std::string& c) {
  using grpc::StatusCode;
  if (c.empty()) return StatusCode::UNAVAILABLE;
  if (c == "not_found") return StatusCode::NOT_FOUND;
  if (c == "exists") return StatusCode::ALREADY_EXISTS;
  if (c == "no_space") return StatusCode::RESOURCE_EXHAUSTED;
  if (c == "busy" || c == "pool_read_only") return StatusCode::FAILED_PRECONDITION;
  if (c == "invalid_value" || c == "bad_request" || c == "missing_field" || c == "wrong_type" ||
      c == "unknown_field" || c == "too_large")
    return StatusCode::INVALID_ARGUMENT;
  if (c == "forbidden") return StatusCode::PERMISSION_DENIED;
  return StatusCode::INTERNAL;
}

std::string grpc_code_name(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  auto i = static_cast<unsigned>(code);
  return i < std::size(kNames) ? kNames[i] : "code " + std::to_string(i);
}

CsiError from_agent_error(const std::string& what, const Error& error) {
  return CsiError{code_for_agent_error(error.kind), what + ": " + error.message()};
}

grpc::Status rpc_status(const CsiResult<void>& r, std::string_view rpc) {
  if (r) return grpc::Status::OK;
  log::info(std::string(rpc) + ": " + grpc_code_name(r.error().code) + ": " + r.error().message);
  return to_status(r.error());
}

}  // namespace stepsnap::csi
