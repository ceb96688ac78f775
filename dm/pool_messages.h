// The thin-pool target's messages, one function each, sent to the pool device.
// The kernel commits its metadata after every message, so each one is atomic
// on its own and none of them is atomic with another.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"
#include "dm/thin_ids.h"

namespace stepsnap::dm {

// EEXIST if the id is taken.
Status create_thin(const std::string& pool, ThinId id);
// The origin must be inactive or suspended: the kernel does not check, and a
// snapshot of a live origin may miss writes in flight. EEXIST if `id` is
// taken, ENODATA if the origin does not exist.
Status create_snap(const std::string& pool, ThinId id, ThinId origin);
// ENODATA if the id does not exist; the device must not be active.
Status delete_thin(const std::string& pool, ThinId id);
// EINVAL unless `current` is the pool's transaction id (a compare-and-swap).
Status set_transaction_id(const std::string& pool, std::uint64_t current, std::uint64_t next);
// A metadata snapshot lets thin_dump/thin_ls read a live pool's mappings.
Status reserve_metadata_snap(const std::string& pool);
Status release_metadata_snap(const std::string& pool);

}  // namespace stepsnap::dm
