// The status lines of thin-pool and thin targets, parsed.
// Format (kernel thin-provisioning.rst, 6.x):
//   <transaction id> <used meta>/<total meta> <used data>/<total data>
//   <held metadata root> ro|rw|out_of_data_space [no_]discard_passdown
//   error_if_no_space|queue_if_no_space needs_check|- [<metadata low watermark>]
// or "Fail" when the pool has failed. Older kernels stop earlier; missing
// trailing fields keep their defaults. Pure functions, unit-tested.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/error.h"

namespace stepsnap::dm {

enum class PoolMode {
  write,              // "rw"
  read_only,          // "ro": metadata error or metadata space exhausted
  out_of_data_space,  // data full; writes to unprovisioned blocks fail/queue
  failed,             // "Fail": no I/O at all
};

struct PoolStatus {
  std::uint64_t transaction_id = 0;
  std::uint64_t used_metadata_blocks = 0;  // 4 KiB metadata blocks
  std::uint64_t total_metadata_blocks = 0;
  std::uint64_t used_data_blocks = 0;  // data blocks of block_sectors each
  std::uint64_t total_data_blocks = 0;
  std::optional<std::uint64_t> held_metadata_root;  // set while a metadata snap is held
  PoolMode mode = PoolMode::write;
  bool discard_passdown = true;
  bool error_if_no_space = false;
  bool needs_check = false;
  std::uint64_t metadata_low_watermark = 0;
  // From the pool's table rather than its status line (filled by ThinPool).
  std::uint32_t block_sectors = 0;
  std::uint64_t low_water_blocks = 0;

  std::uint64_t free_data_blocks() const { return total_data_blocks - used_data_blocks; }
  std::uint64_t free_metadata_blocks() const {
    return total_metadata_blocks - used_metadata_blocks;
  }
};

Result<PoolStatus> parse_pool_status(const std::string& line);
std::string to_string(PoolMode mode);

struct ThinStatus {
  bool failed = false;
  std::uint64_t mapped_sectors = 0;
  std::optional<std::uint64_t> highest_mapped_sector;  // none when nothing is mapped
};

Result<ThinStatus> parse_thin_status(const std::string& line);

}  // namespace stepsnap::dm
