#include "agent/volumes/stream_fd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace stepsnap::agent {

void widen_pipe(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
  (void)::fcntl(fd, F_SETPIPE_SZ, static_cast<int>(kStreamPipeBytes));
}

Status StreamWriter::write_through(std::span<const std::uint8_t> bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd_, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("write send stream", "the output");
    off += static_cast<std::size_t>(n);
  }
  return {};
}

Status StreamWriter::write(std::span<const std::uint8_t> bytes) {
  if (buffer_.size() + bytes.size() > kStreamBufferBytes) {
    if (auto r = flush(); !r) return r;
  }
  if (bytes.size() >= kStreamBufferBytes) return write_through(bytes);
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
  return {};
}

Status StreamWriter::flush() {
  auto r = write_through(buffer_);
  buffer_.clear();
  return r;
}

Result<std::size_t> StreamReader::read_fd(std::span<std::uint8_t> out) {
  for (;;) {
    ssize_t n = ::read(fd_, out.data(), out.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("read send stream", "the input");
    return static_cast<std::size_t>(n);
  }
}

Result<std::size_t> StreamReader::read(std::span<std::uint8_t> out) {
  if (out.empty()) return 0;
  if (begin_ == end_) {
    if (out.size() >= buffer_.size()) return read_fd(out);
    auto n = read_fd(buffer_);
    if (!n) return n;
    begin_ = 0;
    end_ = *n;
    if (end_ == 0) return 0;
  }
  std::size_t n = std::min(out.size(), end_ - begin_);
  std::memcpy(out.data(), buffer_.data() + begin_, n);
  begin_ += n;
  return n;
}

}  // namespace stepsnap::agent
