#include "dm/thin_pool.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "common/log.h"
#include "common/unique_fd.h"
#include "dm/dm_task.h"
#include "dm/holders.h"
#include "dm/pool_messages.h"
#include "dm/snapshot.h"
#include "dm/suspend_guard.h"
#include "dm/thin_metadata.h"

namespace stepsnap::dm {
namespace {

constexpr std::uint32_t kMinBlockSectors = 128;      // 64 KiB, the kernel's minimum
constexpr std::uint32_t kMaxBlockSectors = 2097152;  // 1 GiB
constexpr std::size_t kMetadataSuperblock = 4096;
// The kernel keeps a metadata reserve and switches the pool to read-only
// ("ro" in its status) when free metadata falls into it; a read-only pool
// with this little metadata left is out of metadata space, not damaged.
bool metadata_exhausted(const PoolStatus& s) {
  std::uint64_t reserve = std::min<std::uint64_t>(s.total_metadata_blocks / 4, 1024);
  return s.free_metadata_blocks() <= reserve;
}

std::string space_words(const PoolStatus& s) {
  return "data " + std::to_string(s.used_data_blocks) + "/" + std::to_string(s.total_data_blocks) +
         " blocks, metadata " + std::to_string(s.used_metadata_blocks) + "/" +
         std::to_string(s.total_metadata_blocks) + " blocks used, mode " + to_string(s.mode) +
         (s.needs_check ? ", needs_check" : "");
}

// What is wrong with a pool, as an error kind; none when it is usable.
ErrorKind trouble(const PoolStatus& s) {
  if (s.mode == PoolMode::failed) return ErrorKind::pool_failed;
  if (s.mode == PoolMode::out_of_data_space) return ErrorKind::out_of_data_space;
  if (s.mode == PoolMode::read_only && metadata_exhausted(s)) {
    return ErrorKind::out_of_metadata_space;
  }
  if (s.needs_check) return ErrorKind::needs_check;
  if (s.mode == PoolMode::read_only) return ErrorKind::read_only;
  return ErrorKind::none;
}

Result<std::uint64_t> block_device_size(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open", path);
  std::uint64_t bytes = 0;
  if (::ioctl(fd.get(), BLKGETSIZE64, &bytes) != 0) return fail_errno("BLKGETSIZE64", path);
  return bytes;
}

// An all-zero superblock is how the kernel recognises a device to format.
Status zero_superblock(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open metadata device", path);
  char zeros[kMetadataSuperblock] = {};
  if (::pwrite(fd.get(), zeros, sizeof zeros, 0) != static_cast<ssize_t>(sizeof zeros)) {
    return fail_errno("zero metadata superblock", path);
  }
  if (::fsync(fd.get()) != 0) return fail_errno("fsync metadata device", path);
  return {};
}

Result<std::string> dev_number(const std::string& name) {
  auto i = info(name);
  if (!i) return tl::unexpected(i.error());
  return std::to_string(i->major) + ":" + std::to_string(i->minor);
}

// Removes a dm device, retrying while it is busy; then says who holds it.
Status remove_with_retry(const std::string& name, const RetryPolicy& retry) {
  for (int attempt = 0;; ++attempt) {
    auto r = remove_device(name);
    if (r || r.error().err == ENXIO) return {};
    if (r.error().err != EBUSY) return r;
    if (attempt + 1 >= retry.attempts) break;
    std::this_thread::sleep_for(retry.delay);
  }
  std::string holders = "device is busy";
  if (auto i = info(name)) holders = describe_holders(i->major, i->minor, i->open_count);
  return fail_kind(ErrorKind::busy, "deactivate", name, EBUSY,
                   holders + "; gave up after " + std::to_string(retry.attempts) + " tries");
}

}  // namespace

std::string ThinVolume::path() const { return mapper_path(name); }

Result<ThinPool> ThinPool::create(const PoolConfig& config) {
  if (auto r = check_dm_name(config.name); !r)
    return tl::unexpected(r.error().context("create pool"));
  if (config.block_sectors < kMinBlockSectors || config.block_sectors > kMaxBlockSectors ||
      config.block_sectors % kMinBlockSectors != 0) {
    return fail("create pool", config.name, EINVAL,
                "block size must be a multiple of 128 sectors (64 KiB), at most 1 GiB");
  }
  auto data_bytes = block_device_size(config.data_dev);
  if (!data_bytes) return tl::unexpected(data_bytes.error().context("create pool " + config.name));
  if (config.format) {
    if (auto r = zero_superblock(config.metadata_dev); !r) {
      return tl::unexpected(r.error().context("create pool " + config.name));
    }
  }
  PoolTable t;
  t.metadata_dev = config.metadata_dev;
  t.data_dev = config.data_dev;
  // The pool's length must be a whole number of blocks.
  t.block_sectors = config.block_sectors;
  t.data_sectors = *data_bytes / kSectorSize / t.block_sectors * t.block_sectors;
  if (t.data_sectors == 0) return fail("create pool", config.name, EINVAL, "data device too small");
  t.low_water_blocks = config.low_water_blocks != 0 ? config.low_water_blocks
                                                    : t.data_sectors / t.block_sectors / 10;
  t.zero_new_blocks = config.zero_new_blocks;
  t.discard_passdown = config.discard_passdown;
  t.error_if_no_space = config.error_if_no_space;
  if (auto r = create_device(config.name, {pool_target(t)}); !r) return tl::unexpected(r.error());
  log::info("dm: created pool " + config.name + " on " + config.data_dev + " + " +
            config.metadata_dev);
  return open(config.name);
}

Result<ThinPool> ThinPool::open(const std::string& name,
                                std::optional<std::uint64_t> expected_txn) {
  auto dev = dev_number(name);
  if (!dev) return tl::unexpected(dev.error().context("open pool"));
  auto lines = table(name);
  if (!lines) return tl::unexpected(lines.error().context("open pool"));
  if (lines->size() != 1) return fail("open pool", name, EINVAL, "not a single-target table");
  auto t = parse_pool_target(lines->front());
  if (!t) return tl::unexpected(t.error().context("open pool " + name));
  ThinPool pool(name, *dev, *t, 0);
  auto st = pool.status();
  if (!st) return tl::unexpected(st.error().context("open pool"));
  if (expected_txn && *expected_txn != st->transaction_id) {
    return fail_kind(ErrorKind::stale_view, "open pool", name, 0,
                     "transaction id is " + std::to_string(st->transaction_id) +
                         ", the caller last saw " + std::to_string(*expected_txn));
  }
  pool.txn_ = st->transaction_id;
  return pool;
}

std::string ThinPool::path() const { return mapper_path(name_); }

Status ThinPool::resync() {
  auto st = status();
  if (!st) return tl::unexpected(st.error());
  txn_ = st->transaction_id;
  return {};
}

Result<PoolStatus> ThinPool::status() const {
  // Without a metadata commit (dm_task.h, StatusOptions): every change this
  // view makes is a pool message, and the kernel commits after each message
  // (pool_message), so what a commit here would add is only the data
  // mappings written since the last commit, which the pool commits on its
  // own (every second, and on every flush such as a snapshot's suspend).
  // The numbers are the in-core ones either way. That commit cost 16 ms
  // per read with one thin device in the pool and 36 ms with 10,000, in
  // the emulated guest (docs/benchmarks.md), on a held step's path.
  auto lines = dm::status(name_, {.commit_metadata = false});
  if (!lines) return tl::unexpected(lines.error());
  if (lines->size() != 1 || lines->front().type != "thin-pool") {
    return fail("pool status", name_, EINVAL, "not a thin-pool device");
  }
  auto st = parse_pool_status(lines->front().params);
  if (!st) return tl::unexpected(st.error());
  st->block_sectors = table_.block_sectors;
  st->low_water_blocks = table_.low_water_blocks;
  return st;
}

Status ThinPool::check_usable() const {
  auto st = status();
  if (!st) return tl::unexpected(st.error());
  return usable(*st);
}

Status ThinPool::usable(const PoolStatus& st) const {
  ErrorKind kind = trouble(st);
  if (kind == ErrorKind::none) return {};
  int err = (kind == ErrorKind::out_of_data_space || kind == ErrorKind::out_of_metadata_space)
                ? ENOSPC
                : EROFS;
  return fail_kind(kind, "use pool", name_, err,
                   std::string(to_string(kind)) + ": " + space_words(st));
}

Error ThinPool::classify(Error error) const {
  if (!error.kind.empty()) return error;
  auto st = status();
  if (st) {
    ErrorKind kind = trouble(*st);
    if (kind != ErrorKind::none) {
      error.detail += (error.detail.empty() ? "" : "; ") + space_words(*st);
      return with_kind(std::move(error), kind);
    }
  }
  // A message that fails with ENOSPC ran out of metadata on the way.
  if (error.err == ENOSPC) return with_kind(std::move(error), ErrorKind::out_of_metadata_space);
  return error;
}

Status ThinPool::bump_txn(std::uint64_t next) {
  auto r = set_transaction_id(name_, txn_, next);
  if (r) {
    txn_ = next;
    if (on_txn_) on_txn_(txn_);
    return {};
  }
  // set_transaction_id is a compare-and-swap: EINVAL means the kernel's id is
  // not the one we hold.
  if (r.error().err == EINVAL) {
    return fail_kind(ErrorKind::stale_view, "change pool", name_, EINVAL,
                     "its transaction id is no longer " + std::to_string(txn_));
  }
  return tl::unexpected(classify(r.error()));
}

Result<std::vector<ThinId>> ThinPool::reserve_ids(std::size_t count, SnapshotTimes* times) {
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  // One status read for both checks. Usable first: a failed pool reports
  // no transaction id (0), and "resync the catalog" would send its
  // operator the wrong way.
  auto st = status();
  if (times) times->status = Clock::now() - t0;
  if (!st) return tl::unexpected(st.error());
  if (auto r = usable(*st); !r) return tl::unexpected(r.error());
  if (st->transaction_id != txn_) {
    return fail_kind(ErrorKind::stale_view, "change pool", name_, 0,
                     "transaction id is " + std::to_string(st->transaction_id) + ", expected " +
                         std::to_string(txn_) + ": resync the catalog first");
  }
  std::vector<ThinId> ids;
  ThinId next = decode_txn(txn_).next_id;
  for (std::size_t k = 0; k < count; ++k) {
    auto id = next_free_id(next, in_use_);
    // An id already picked for this group is not free either (the scan
    // wraps around to the group's first id only when the space is full).
    if (!id || std::find(ids.begin(), ids.end(), *id) != ids.end()) {
      return fail_kind(ErrorKind::ids_exhausted, "allocate thin id", name_, ENOSPC);
    }
    ids.push_back(*id);
    next = *id + 1;
  }
  // One bump for the whole group (it was one per id), before any of them
  // is created: the transaction id's high-water mark moves past the
  // group's last id, so every id of the group is below it. What recovery
  // relies on is unchanged, wherever a kill -9 lands:
  //   - before this message: nothing changed;
  //   - after it, before the caller's intents (BeforeCreate) are written:
  //     the pool's transaction id is ahead of the one the caller recorded
  //     (reconciled at the next start); none of the ids exists, no row
  //     names them, and the next start reads the mark from the pool
  //     (ThinPool::open), so they are skipped, never handed out again;
  //   - after some or all intents, before or between the create_snap
  //     messages: every id that reached the pool has its intent row,
  //     since all intents are written before the first suspend; recovery
  //     deletes the present ones and drops the absent ones' rows, the
  //     pool's list of ids (list_thin_ids) being what tells them apart.
  // A per-id bump gave the same three cases; the transaction id only ever
  // says where the next id starts and whether the pool changed, never
  // which create_snap messages arrived. (Should the 24-bit space wrap
  // inside a group, the mark is the last id's, as for a single id after a
  // wrap: next_free_id skips the ids in use.)
  auto t1 = Clock::now();
  auto bumped = bump_txn(txn_for_create(txn_, ids.back()));
  if (times) times->txn_message = Clock::now() - t1;
  if (!bumped) return tl::unexpected(bumped.error());
  return ids;
}

Result<ThinId> ThinPool::reserve_id(SnapshotTimes* times) {
  auto ids = reserve_ids(1, times);
  if (!ids) return tl::unexpected(ids.error());
  return ids->front();
}

// Runs `make(id)` with fresh ids until the kernel accepts one: an id made by
// someone outside this scheme answers EEXIST, and is skipped from then on.
template <typename Reserve, typename Make>
static Result<ThinId> with_fresh_id(ThinPool& pool, std::set<ThinId>& in_use, Reserve reserve,
                                    const BeforeCreate& before, SnapshotTimes* times, Make make) {
  using Clock = std::chrono::steady_clock;
  for (int attempt = 0; attempt < 16; ++attempt) {
    auto id = reserve();
    if (!id) return id;
    if (before) {
      auto t0 = Clock::now();
      auto b = before(*id);
      if (times) times->before = Clock::now() - t0;
      if (!b) return tl::unexpected(b.error());
    }
    auto r = make(*id);
    if (r) {
      in_use.insert(*id);
      return *id;
    }
    if (r.error().err != EEXIST) return tl::unexpected(r.error());
    in_use.insert(*id);
  }
  return fail("allocate thin id", pool.name(), EEXIST, "16 ids in a row already existed");
}

Result<ThinId> ThinPool::create_thin(const BeforeCreate& before) {
  auto r = with_fresh_id(
      *this, in_use_, [&] { return reserve_id(nullptr); }, before, nullptr,
      [&](ThinId id) { return dm::create_thin(name_, id); });
  if (!r) return tl::unexpected(classify(r.error()));
  return r;
}

Result<ThinId> ThinPool::snapshot(const ThinVolume& origin, const BeforeCreate& before,
                                  SnapshotTimes* times) {
  const SnapshotOptions options{.flush_first = flush_before_snapshot_, .times = times};
  auto r = with_fresh_id(
      *this, in_use_, [&] { return reserve_id(times); }, before, times,
      [&](ThinId id) {
        return snapshot_active(name_, {origin.name, origin.id}, id, options);
      });
  if (!r) return tl::unexpected(classify(r.error()));
  return r;
}

Result<ThinId> ThinPool::snapshot(ThinId origin, const BeforeCreate& before, SnapshotTimes* times) {
  auto active = devices_of(origin);
  if (!active) return tl::unexpected(active.error());
  std::vector<std::string> devices;
  for (const auto& v : *active) devices.push_back(v.name);
  auto r = with_fresh_id(
      *this, in_use_, [&] { return reserve_id(times); }, before, times,
      [&](ThinId id) {
        return snapshot_suspending(name_, devices, origin, id,
                                   {.flush_first = flush_before_snapshot_, .times = times});
      });
  if (!r) return tl::unexpected(classify(r.error()));
  return r;
}

Result<std::vector<ThinId>> ThinPool::snapshot_group(const std::vector<ThinVolume>& origins,
                                                     const BeforeCreate& before,
                                                     SnapshotTimes* times) {
  if (origins.empty()) return std::vector<ThinId>{};
  std::vector<ActiveOrigin> active;
  for (const auto& origin : origins) active.push_back({origin.name, origin.id});
  // All the group's ids with one status read and one transaction-id
  // message (reserve_ids), where each id had its own of both.
  auto reserved = reserve_ids(origins.size(), times);
  if (!reserved) return tl::unexpected(reserved.error());
  const std::vector<ThinId>& ids = *reserved;
  // Every intent before the first suspend: nothing is paused while the
  // caller writes its records.
  auto t0 = std::chrono::steady_clock::now();
  for (ThinId id : ids) {
    if (!before) break;
    if (auto b = before(id); !b) return tl::unexpected(b.error());
  }
  if (times) times->before = std::chrono::steady_clock::now() - t0;
  std::vector<ThinId> created;
  auto r = snapshot_group_active(name_, active, ids, &created,
                                 {.flush_first = flush_before_snapshot_, .times = times});
  for (ThinId id : created) in_use_.insert(id);
  if (r) return ids;
  // All or nothing: a partial group is not a consistent state of the step.
  Error error = classify(r.error());
  for (ThinId id : created) {
    if (auto d = delete_thin(id); !d) {
      log::error("dm: rolling back group snapshot: " + d.error().message());
    }
  }
  return tl::unexpected(error);
}

Status ThinPool::delete_thin(ThinId id) {
  auto st = status();
  if (!st) return tl::unexpected(st.error());
  if (st->transaction_id != txn_) {
    return fail_kind(ErrorKind::stale_view, "delete thin " + std::to_string(id), name_, 0,
                     "transaction id is " + std::to_string(st->transaction_id) + ", expected " +
                         std::to_string(txn_));
  }
  // No check_usable(): deleting is how a full pool gets its space back. The
  // kernel re-checks free space when it commits the delete and leaves
  // out-of-data-space mode by itself.
  if (auto r = bump_txn(txn_for_delete(txn_)); !r) return r;
  if (auto r = dm::delete_thin(name_, id); !r) {
    Error e = classify(r.error());
    if (e.err == EBUSY) e.detail += " (thin id is still active)";
    return tl::unexpected(e);
  }
  in_use_.erase(id);
  return {};
}

Result<ThinVolume> ThinPool::activate(ThinId id, const std::string& name, std::uint64_t size_bytes,
                                      const ActivateOptions& options) {
  if (auto r = check_dm_name(name); !r) return tl::unexpected(r.error().context("activate"));
  std::uint64_t sectors = size_bytes / kSectorSize;
  if (sectors == 0) return fail("activate", name, EINVAL, "size is smaller than a sector");
  // The table names the pool by device number, which stays valid however
  // /dev/mapper is managed.
  auto r = create_device(name, {thin_target(dev_, id, sectors)}, {.read_only = options.read_only});
  if (!r) {
    Error e = r.error();
    e.detail += (e.detail.empty() ? "" : "; ") + std::string("thin id ") + std::to_string(id) +
                " of pool " + name_;
    // The kernel's answer for a taken name does not say so.
    if (exists(name)) e.detail += "; a device named " + name + " exists already";
    return tl::unexpected(e);
  }
  return ThinVolume{name, id, sectors};
}

Status ThinPool::deactivate(const std::string& name, const RetryPolicy& retry) {
  return remove_with_retry(name, retry);
}

Result<ThinVolume> ThinPool::create_volume(const std::string& name, std::uint64_t size_bytes,
                                           const BeforeCreate& before) {
  // Before the id is reserved: a name the kernel would refuse must not cost
  // an id, a transaction or the caller's intent record.
  if (auto r = check_dm_name(name); !r) return tl::unexpected(r.error().context("create volume"));
  auto id = create_thin(before);
  if (!id) return tl::unexpected(id.error());
  auto volume = activate(*id, name, size_bytes);
  if (!volume) (void)delete_thin(*id);
  return volume;
}

Result<ThinVolume> ThinPool::clone(ThinId source, const std::string& name, std::uint64_t size_bytes,
                                   const BeforeCreate& before) {
  if (auto r = check_dm_name(name); !r) return tl::unexpected(r.error().context("clone"));
  auto id = snapshot(source, before);
  if (!id) return tl::unexpected(id.error());
  auto volume = activate(*id, name, size_bytes);
  if (!volume) (void)delete_thin(*id);
  return volume;
}

Result<std::vector<ThinVolume>> ThinPool::devices_of(ThinId id) const {
  auto all = active_volumes();
  if (!all) return all;
  std::vector<ThinVolume> out;
  for (auto& v : *all) {
    if (v.id == id) out.push_back(std::move(v));
  }
  return out;
}

Result<std::vector<ThinVolume>> ThinPool::active_volumes() const {
  auto names = list_devices();
  if (!names) return tl::unexpected(names.error());
  std::vector<ThinVolume> out;
  for (const auto& name : *names) {
    auto lines = table(name);
    // A device removed since the list is not an error.
    if (!lines || lines->size() != 1 || lines->front().type != "thin") continue;
    auto t = parse_thin_target(lines->front());
    if (t && t->pool_dev == dev_) out.push_back({name, t->id, lines->front().length});
  }
  return out;
}

Status ThinPool::remove(const RetryPolicy& retry) { return remove_with_retry(name_, retry); }

Result<bool> ThinPool::release_held_metadata_snap() {
  auto st = status();
  if (!st) return tl::unexpected(st.error());
  if (!st->held_metadata_root) return false;
  if (auto r = release_metadata_snap(name_); !r) {
    return tl::unexpected(classify(r.error()).context("release held metadata snapshot"));
  }
  return true;
}

namespace {

// The table names the metadata device as "major:minor" (or a path); without
// udev there is no /dev/block/M:m, but sysfs knows the kernel's node name.
Result<std::string> device_path(const std::string& dev) {
  if (!dev.empty() && dev[0] == '/') return dev;
  std::string uevent = "/sys/dev/block/" + dev + "/uevent";
  UniqueFd fd(::open(uevent.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("find device node", uevent);
  char buf[1024];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return fail("find device node", uevent, EIO, "empty uevent");
  std::string text(buf, static_cast<std::size_t>(n));
  auto at = text.find("DEVNAME=");
  if (at == std::string::npos) return fail("find device node", uevent, ENOENT, "no DEVNAME");
  auto end = text.find('\n', at);
  return "/dev/" + text.substr(at + 8, end == std::string::npos ? end : end - at - 8);
}

}  // namespace

Result<MetadataSnapGuard> MetadataSnapGuard::reserve(const std::string& pool) {
  if (auto r = reserve_metadata_snap(pool); !r) {
    Error e = r.error();
    if (e.err == EBUSY || e.err == EINVAL) {
      e.detail += (e.detail.empty() ? "" : "; ") +
                  std::string(
                      "a metadata snapshot may already be held (thin_ls -m?); "
                      "release it with the release_metadata_snap message");
    }
    return tl::unexpected(e);
  }
  return MetadataSnapGuard(pool);
}

MetadataSnapGuard::~MetadataSnapGuard() {
  if (pool_.empty()) return;
  if (auto r = release_metadata_snap(pool_); !r) {
    log::error("dm: " + r.error().message() + "; the pool keeps a metadata snapshot");
  }
}

Result<MetadataSnapGuard> ThinPool::hold_metadata_snapshot() const {
  auto held = MetadataSnapGuard::reserve(name_);
  if (!held) return tl::unexpected(classify(held.error()).context("hold metadata snapshot"));
  return held;
}

Result<std::string> ThinPool::metadata_device_path() const {
  return device_path(table_.metadata_dev);
}

Result<std::string> ThinPool::data_device_path() const { return device_path(table_.data_dev); }

Result<std::vector<ThinId>> ThinPool::list_thin_ids() const {
  const std::string op = "list thin ids of " + name_;
  auto path = device_path(table_.metadata_dev);
  if (!path) return tl::unexpected(path.error().context(op));
  auto reader = open_metadata_device(*path);
  if (!reader) return tl::unexpected(reader.error().context(op));
  auto snap = MetadataSnapGuard::reserve(name_);
  if (!snap) return tl::unexpected(classify(snap.error()).context(op));
  // The kernel commits after the message, so the copy's location is in the
  // status line and every block under it is on the device.
  auto st = status();
  if (!st) return tl::unexpected(st.error().context(op));
  if (!st->held_metadata_root) {
    return fail(op, "", EIO, "the pool reports no held metadata root after reserving one");
  }
  auto ids = thin_ids_in_snapshot(*reader, *st->held_metadata_root);
  if (!ids) return tl::unexpected(ids.error().context(op + " (metadata device " + *path + ")"));
  return ids;
}

}  // namespace stepsnap::dm
