// Small filesystem and block helpers for the vm tests: mkfs, a mount owner,
// files with known content, and a checksum of a whole tree.
#pragma once

#include <cstdint>
#include <map>
#include <ostream>
#include <string>

#include "common/error.h"

namespace stepsnap::dm::testing {

enum class Fs { ext4, xfs };
std::string to_string(Fs fs);
// gtest prints parameters with this: "ext4", not "4-byte object <00-00 00-00>".
inline void PrintTo(Fs fs, std::ostream* os) { *os << to_string(fs); }

// mkfs.ext4 / mkfs.xfs, quiet, without discard (instant on a thin device).
Status make_fs(Fs fs, const std::string& device);

// Owner of one mount point; unmounts in its destructor.
class Mount {
 public:
  // Read-only mounts skip journal/log recovery (ext4 noload, xfs norecovery)
  // so they show exactly what reached the device. xfs mounts use nouuid:
  // a snapshot carries its origin's filesystem UUID.
  static Result<Mount> mount(Fs fs, const std::string& device, const std::string& dir,
                             bool read_only = false);
  Mount(Mount&& other) noexcept : dir_(std::move(other.dir_)) { other.dir_.clear(); }
  Mount& operator=(Mount&&) = delete;
  Mount(const Mount&) = delete;
  ~Mount();
  const std::string& dir() const { return dir_; }
  std::string operator/(const std::string& file) const { return dir_ + "/" + file; }

 private:
  explicit Mount(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

// Writes `bytes` of pseudo-random data derived from `seed` (no fsync: the
// data may sit in the page cache, as an application's would).
Status write_file(const std::string& path, std::uint64_t bytes, std::uint64_t seed);
Result<std::string> read_file(const std::string& path);

// Relative path -> FNV-1a 64 of the content, for every regular file under
// `dir` (lost+found excluded).
using Tree = std::map<std::string, std::uint64_t>;
Tree checksum_tree(const std::string& dir);

// Raw device I/O with O_DIRECT|O_SYNC: the device, not the page cache.
Status write_block(const std::string& device, std::uint64_t offset, const std::string& data);
Result<std::string> read_block(const std::string& device, std::uint64_t offset, std::size_t length);

}  // namespace stepsnap::dm::testing
