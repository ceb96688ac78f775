// A real dm-thin pool on two loop files in /tmp, for the vm tests. Its
// destructor removes every thin device still active on it, the pool and the
// files, so a failed test leaves nothing behind for the next one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/error.h"
#include "dm/loop_device.h"
#include "dm/thin_pool.h"

namespace stepsnap::dm::testing {

constexpr std::uint64_t kMiB = 1024 * 1024;

class TestPool {
 public:
  static Result<std::unique_ptr<TestPool>> make(std::uint64_t data_bytes = 256 * kMiB,
                                                std::uint64_t metadata_bytes = 16 * kMiB);
  ~TestPool();

  ThinPool& pool() { return *pool_; }
  const std::string& dir() const { return dir_; }
  // A dm name unique to this pool: "<pool>-<what>".
  std::string name(const std::string& what) const { return pool_->name() + "-" + what; }

 private:
  TestPool() = default;
  std::string dir_;
  std::unique_ptr<LoopDevice> data_, metadata_;
  std::unique_ptr<ThinPool> pool_;
};

}  // namespace stepsnap::dm::testing
