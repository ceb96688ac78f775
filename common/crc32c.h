// crc32c (Castagnoli), as the thin-pool metadata and the send stream both
// checksum their blocks: the hardware instruction when the CPU has it.
#pragma once

#include <cstdint>
#include <span>

namespace stepsnap {

// Standard: init ~0, final inversion; `crc` continues an earlier result.
std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t crc = 0);

}  // namespace stepsnap
