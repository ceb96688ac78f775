// The descriptor a send stream goes through (a pipe to ssh, a file): read
// and written in large pieces. A stream record is a few small fields around
// a block of data; written or read field by field, every record costs
// several system calls and, on a pipe, a wake-up of the process at the
// other end for each 64 KiB the pipe holds by default.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/error.h"

namespace stepsnap::agent {

// A pipe's size as the agent sets it on a stream's descriptor: the most an
// unprivileged pipe may have by default (/proc/sys/fs/pipe-max-size).
inline constexpr std::size_t kStreamPipeBytes = 1 << 20;
// What a buffered reader or writer holds before it calls the kernel.
inline constexpr std::size_t kStreamBufferBytes = 1 << 20;

// Makes `fd`'s pipe hold kStreamPipeBytes, if it is a pipe; anything else
// (a file, a socket) is left as it is. Never fails: a smaller pipe is only
// slower.
void widen_pipe(int fd);

// Collects writes and passes them to the descriptor in pieces of up to
// kStreamBufferBytes; flush() writes what is left (the destructor does not:
// an error there would have nowhere to go).
class StreamWriter {
 public:
  explicit StreamWriter(int fd) : fd_(fd) { buffer_.reserve(kStreamBufferBytes); }
  Status write(std::span<const std::uint8_t> bytes);
  Status flush();

 private:
  Status write_through(std::span<const std::uint8_t> bytes);
  int fd_;
  std::vector<std::uint8_t> buffer_;
};

// Reads the descriptor in pieces of up to kStreamBufferBytes and hands them
// out as asked; reads larger than that go straight into the caller's span.
class StreamReader {
 public:
  explicit StreamReader(int fd) : fd_(fd), buffer_(kStreamBufferBytes) {}
  // As a ByteSource (send_stream.h): fills what it can; 0 only at the end.
  Result<std::size_t> read(std::span<std::uint8_t> out);

 private:
  Result<std::size_t> read_fd(std::span<std::uint8_t> out);
  int fd_;
  std::vector<std::uint8_t> buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

}  // namespace stepsnap::agent
