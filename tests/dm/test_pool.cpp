#include "test_pool.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "common/log.h"

namespace stepsnap::dm::testing {

Result<std::unique_ptr<TestPool>> TestPool::make(std::uint64_t data_bytes,
                                                 std::uint64_t metadata_bytes) {
  static std::atomic<int> counter{0};
  std::string name = "ssdm" + std::to_string(::getpid()) + "x" + std::to_string(counter++);
  std::unique_ptr<TestPool> tp(new TestPool);
  tp->dir_ = "/tmp/" + name;
  std::filesystem::create_directories(tp->dir_);
  auto data = LoopDevice::create_file(tp->dir_ + "/data", data_bytes);
  if (!data) return tl::unexpected(data.error());
  auto meta = LoopDevice::create_file(tp->dir_ + "/metadata", metadata_bytes);
  if (!meta) return tl::unexpected(meta.error());
  tp->data_ = std::make_unique<LoopDevice>(std::move(*data));
  tp->metadata_ = std::make_unique<LoopDevice>(std::move(*meta));
  PoolConfig config;
  config.name = name;
  config.data_dev = tp->data_->path();
  config.metadata_dev = tp->metadata_->path();
  auto pool = ThinPool::create(config);
  if (!pool) return tl::unexpected(pool.error());
  tp->pool_ = std::make_unique<ThinPool>(std::move(*pool));
  return tp;
}

TestPool::~TestPool() {
  if (pool_) {
    RetryPolicy quick{20, std::chrono::milliseconds(50)};
    if (auto volumes = pool_->active_volumes()) {
      for (const auto& v : *volumes) {
        if (auto r = pool_->deactivate(v.name, quick); !r) log::error(r.error().message());
      }
    }
    if (auto r = pool_->remove(quick); !r) log::error(r.error().message());
  }
  // Loop devices detach on their own (autoclear) once the pool let go.
  metadata_.reset();
  data_.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace stepsnap::dm::testing
