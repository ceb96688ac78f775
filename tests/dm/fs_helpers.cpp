#include "fs_helpers.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include "common/unique_fd.h"

namespace stepsnap::dm::testing {
namespace {
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

std::uint64_t fnv1a(const std::string& data) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) h = (h ^ c) * 1099511628211ull;
  return h;
}
}  // namespace

std::string to_string(Fs fs) { return fs == Fs::ext4 ? "ext4" : "xfs"; }

Status make_fs(Fs fs, const std::string& device) {
  std::string cmd = fs == Fs::ext4
                        ? "mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "
                        : "mkfs.xfs -q -f -K ";
  cmd += device + " >/dev/null";
  int rc = std::system(cmd.c_str());
  if (rc != 0) return fail("mkfs", device, 0, cmd + " exited with " + std::to_string(rc));
  return {};
}

Result<Mount> Mount::mount(Fs fs, const std::string& device, const std::string& dir,
                           bool read_only) {
  std::filesystem::create_directories(dir);
  std::string options;
  if (fs == Fs::xfs) options = read_only ? "nouuid,norecovery" : "nouuid";
  if (fs == Fs::ext4 && read_only) options = "noload";
  unsigned long flags = read_only ? MS_RDONLY : 0;
  if (::mount(device.c_str(), dir.c_str(), to_string(fs).c_str(), flags, options.c_str()) != 0) {
    return fail_errno("mount " + device, dir);
  }
  return Mount(dir);
}

Mount::~Mount() {
  if (!dir_.empty()) ::umount2(dir_.c_str(), 0);
}

Status write_file(const std::string& path, std::uint64_t bytes, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string data(bytes, '\0');
  for (auto& c : data) c = static_cast<char>(rng());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) return fail("write", path, EIO);
  return {};
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("read", path, ENOENT);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Tree checksum_tree(const std::string& dir) {
  Tree tree;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    std::string rel = std::filesystem::relative(e.path(), dir);
    if (rel.starts_with("lost+found") || !e.is_regular_file()) continue;
    tree[rel] = fnv1a(read_file(e.path()).value_or(""));
  }
  return tree;
}

Status write_block(const std::string& device, std::uint64_t offset, const std::string& data) {
  UniqueFd fd(::open(device.c_str(), O_WRONLY | O_DIRECT | O_SYNC | O_CLOEXEC));
  if (!fd) return fail_errno("open", device);
  std::size_t length = (data.size() + 4095) / 4096 * 4096;
  std::unique_ptr<char, FreeDeleter> buf(static_cast<char*>(std::aligned_alloc(4096, length)));
  std::memset(buf.get(), 0, length);
  std::memcpy(buf.get(), data.data(), data.size());
  ssize_t n = ::pwrite(fd.get(), buf.get(), length, static_cast<off_t>(offset));
  if (n < 0) return fail_errno("write", device);
  if (static_cast<std::size_t>(n) != length) return fail("write", device, EIO, "short write");
  return {};
}

Result<std::string> read_block(const std::string& device, std::uint64_t offset,
                               std::size_t length) {
  UniqueFd fd(::open(device.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
  if (!fd) return fail_errno("open", device);
  std::size_t aligned = (length + 4095) / 4096 * 4096;
  std::unique_ptr<char, FreeDeleter> buf(static_cast<char*>(std::aligned_alloc(4096, aligned)));
  ssize_t n = ::pread(fd.get(), buf.get(), aligned, static_cast<off_t>(offset));
  if (n < 0) return fail_errno("read", device);
  return std::string(buf.get(), std::min<std::size_t>(length, static_cast<std::size_t>(n)));
}

}  // namespace stepsnap::dm::testing
