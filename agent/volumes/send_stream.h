// The send stream (docs/send-receive.md): what `stepsnapctl snapshot send`
// writes and `snapshot receive` reads. Pure encoding and decoding over byte
// callbacks, so the format is unit-tested without a pool; the agent's send
// and receive (snapshot_send.h, snapshot_receive.h) feed it a file
// descriptor.
//
//   "STEPSNAP" u32 version u32 n  header JSON (n bytes)  u32 crc32c(header)
//   then records, each a kind byte:
//     'D' u64 first_block u32 count  count*block_bytes of data  u32 crc
//     'Z' u64 first_block u32 count                             u32 crc
//     'E' u64 data_blocks u64 zero_blocks                        u32 crc  u32 stream crc
//   Integers little-endian. A record's crc is crc32c of its bytes from the
//   kind byte on; the stream crc is crc32c of every crc before it, in order
//   (header's first), then of E's counts: a dropped, repeated or reordered
//   record changes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "common/error.h"

namespace stepsnap::agent {

inline constexpr char kStreamMagic[8] = {'S', 'T', 'E', 'P', 'S', 'N', 'A', 'P'};
inline constexpr std::uint32_t kStreamVersion = 1;
// Largest header accepted: labels and metadata, never data.
inline constexpr std::uint32_t kMaxStreamHeaderBytes = 1 << 20;
// Blocks per data record: bounds the memory a receiver needs for one record.
inline constexpr std::uint32_t kMaxRunBlocks = 256;
// Per-record overhead of a data run (kind, first block, count, crc).
inline constexpr std::size_t kDataRecordOverhead = 1 + 8 + 4 + 4;

struct StreamHeader {
  std::uint64_t block_bytes = 0;
  std::uint64_t volume_bytes = 0;
  // Totals of the records that follow, so a receiver can check the pool's
  // room before it makes anything.
  std::uint64_t data_blocks = 0;
  std::uint64_t zero_blocks = 0;
  // {"uuid","name","created","labels","step","parent_uuid"}
  nlohmann::json snapshot = nlohmann::json::object();
  // {"uuid","name"} of the base of an incremental stream; null: full.
  nlohmann::json base = nullptr;
  // {"node","pool"}
  nlohmann::json source = nlohmann::json::object();

  bool incremental() const { return !base.is_null(); }
  nlohmann::json to_json() const;
};

// Checks a header's JSON; the error names the field.
Result<StreamHeader> header_from_json(const nlohmann::json& j);

using ByteSink = std::function<Status(std::span<const std::uint8_t>)>;
// Fills as much of the span as it can; returns 0 only at the end of input.
using ByteSource = std::function<Result<std::size_t>(std::span<std::uint8_t>)>;

class StreamEncoder {
 public:
  explicit StreamEncoder(ByteSink sink) : sink_(std::move(sink)) {}
  Status header(const StreamHeader& header);
  // `data` is count * block_bytes, count <= kMaxRunBlocks.
  Status data(std::uint64_t first_block, std::uint32_t count, std::span<const std::uint8_t> data);
  // Blocks the source has unmapped (read as zeros): the receiver discards them.
  Status zero(std::uint64_t first_block, std::uint32_t count);
  Status end();
  std::uint64_t bytes_written() const { return bytes_; }

 private:
  Status put(std::span<const std::uint8_t> bytes);
  Status record_crc(std::uint32_t crc);
  ByteSink sink_;
  StreamHeader header_;
  std::uint32_t chain_ = 0;
  std::uint64_t data_blocks_ = 0;
  std::uint64_t zero_blocks_ = 0;
  std::uint64_t bytes_ = 0;
};

struct StreamRecord {
  enum class Kind { data, zero, end };
  Kind kind = Kind::end;
  std::uint64_t first_block = 0;
  std::uint32_t count = 0;
  std::vector<std::uint8_t> payload;  // data only
};

// Every error is one line: what is wrong with the stream, at which byte.
class StreamDecoder {
 public:
  explicit StreamDecoder(ByteSource source) : source_(std::move(source)) {}
  Result<StreamHeader> header();
  // After the end record: checks that nothing follows, then returns it.
  Result<StreamRecord> next();
  std::uint64_t bytes_read() const { return offset_; }

 private:
  Status read_exact(std::span<std::uint8_t> out, const char* what);
  Status check_crc(std::uint32_t computed, const char* what);
  ByteSource source_;
  StreamHeader header_;
  bool have_header_ = false;
  bool ended_ = false;
  std::uint32_t chain_ = 0;
  std::uint64_t data_blocks_ = 0;
  std::uint64_t zero_blocks_ = 0;
  std::uint64_t offset_ = 0;
};

}  // namespace stepsnap::agent
