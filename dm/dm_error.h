// The failures of dm/ that a caller acts on differently, carried in
// stepsnap::Error::kind so they survive being passed up and logged.
//
// errno alone cannot tell them apart: a full data device and a full metadata
// device both end in ENOSPC or EIO, yet the first is cured by deleting
// snapshots and the second needs the pool's metadata grown and thin_check run.
#pragma once

#include <string>
#include <string_view>

#include "common/error.h"

namespace stepsnap::dm {

enum class ErrorKind {
  none,
  out_of_data_space,      // pool data device full: delete snapshots or grow it
  out_of_metadata_space,  // pool metadata full: the kernel aborts the transaction
  needs_check,            // pool metadata flagged damaged: run thin_check/repair
  read_only,              // pool in read-only mode (metadata error)
  pool_failed,            // pool in "Fail" mode: no I/O at all
  busy,                   // device still open after the retries
  stale_view,             // the pool changed behind our back (transaction id)
  ids_exhausted,          // every 24-bit thin id is in use
};

std::string_view to_string(ErrorKind kind);
ErrorKind kind_of(const Error& error);

inline Error with_kind(Error error, ErrorKind kind) {
  error.kind = std::string(to_string(kind));
  return error;
}

inline tl::unexpected<Error> fail_kind(ErrorKind kind, std::string op, std::string object, int err,
                                       std::string detail = {}) {
  return tl::unexpected(
      with_kind(Error{std::move(op), std::move(object), err, std::move(detail)}, kind));
}

}  // namespace stepsnap::dm
