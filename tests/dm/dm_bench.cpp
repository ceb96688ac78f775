// Benchmark driver for scripts/bench-dm (runs in the vm guest): the time an
// application is paused by a snapshot and the time of snapshot + writable
// clone, through this library, on an ext4 volume holding --data-mib of data.
//
//   dm_bench --data-mib 256 --iterations 7 [--existing 1000]
//            [--dirty-mib 1] [--no-flush]
//
// Prints one line: "lib data_mib=.. existing=.. dirty_mib=.. flush=on|off
// snapshot_ms=.. frozen_ms=.. flush_ms=.. total_ms=.. status_ms=.. txn_ms=..
// suspend_ms=.. create_snap_ms=.. resume_ms=.. activate_ms=..
// status_commit_ms=.. status_nocommit_ms=.." with medians.
// snapshot_ms is the whole ThinPool::snapshot() call (flush, suspend,
// create_snap, resume, plus the id bookkeeping); frozen_ms the window the
// volume was suspended (first suspend to last resume); flush_ms the flush
// before it. Before each snapshot the volume gets --dirty-mib of fresh,
// unsynced data, as a step that just wrote would leave. The parts of the
// call (dm::SnapshotTimes): the pool's status read, the transaction-id
// message, and inside the frozen window suspend, create_snap, resume;
// activate_ms the clone's activation. status_commit_ms and
// status_nocommit_ms time one pool status read with and without dm-thin's
// metadata commit (DM_NOFLUSH_FLAG), right after the snapshot, so the
// commit a status read would cost is measured beside the one ThinPool
// makes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dm/dm_task.h"
#include "fs_helpers.h"
#include "test_pool.h"

using namespace stepsnap::dm;
using namespace stepsnap::dm::testing;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
int die(const std::string& m) {
  std::fprintf(stderr, "dm_bench: %s\n", m.c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  std::uint64_t data_mib = 64;
  int iterations = 7, existing = 0;
  std::uint64_t dirty_mib = 1;
  bool flush = true;
  for (int i = 1; i < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--no-flush") {
      flush = false;
      --i;
      continue;
    }
    if (i + 1 >= argc) return die("option " + a + " needs a value");
    if (a == "--data-mib")
      data_mib = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--iterations")
      iterations = std::atoi(argv[i + 1]);
    else if (a == "--existing")
      existing = std::atoi(argv[i + 1]);
    else if (a == "--dirty-mib")
      dirty_mib = std::strtoull(argv[i + 1], nullptr, 10);
    else
      return die("unknown option " + a);
  }
  std::uint64_t volume_bytes = (data_mib + dirty_mib + 512) * kMiB;
  // Each iteration's dirty file takes new blocks (the snapshots keep the
  // old ones): room for all of them.
  // Metadata: 16 MiB holds a few thousand devices; 64 KiB more per 10.
  std::uint64_t meta_bytes = std::max<std::uint64_t>(16 * kMiB, existing * 6554ull + 16 * kMiB);
  auto tp = TestPool::make(data_mib * kMiB + volume_bytes + dirty_mib * kMiB * (iterations + 1),
                           meta_bytes);
  if (!tp) return die(tp.error().message());
  ThinPool& pool = (*tp)->pool();
  pool.set_flush_before_snapshot(flush);
  auto origin = pool.create_volume((*tp)->name("origin"), volume_bytes);
  if (!origin) return die(origin.error().message());
  if (auto r = make_fs(Fs::ext4, origin->path()); !r) return die(r.error().message());
  auto m = Mount::mount(Fs::ext4, origin->path(), (*tp)->dir() + "/mnt");
  if (!m) return die(m.error().message());
  for (std::uint64_t i = 0; i < data_mib / 64; ++i) {
    if (auto r = write_file(*m / ("data" + std::to_string(i)), 64 * kMiB, i); !r) {
      return die(r.error().message());
    }
  }
  ::sync();
  // The existing devices: snapshots of one snapshot of the volume, which
  // stays inactive, so each is one create_snap message and shares the
  // volume's data, with no suspend of the volume (10,000 suspends would
  // take most of an hour in the emulated guest).
  if (existing > 0) {
    auto base = pool.snapshot(*origin);
    if (!base) return die(base.error().message());
    for (int i = 1; i < existing; ++i) {
      if (auto s = pool.snapshot(*base); !s) return die(s.error().message());
    }
  }

  std::vector<double> snap_ms, frozen_ms, flush_ms, total_ms, status_ms, txn_ms, suspend_ms,
      create_ms, resume_ms, activate_ms, commit_ms, nocommit_ms;
  auto ms = [](std::chrono::nanoseconds d) { return d.count() / 1e6; };
  for (int i = 0; i < iterations; ++i) {
    // Fresh dirty data, as a running step would leave in the page cache.
    if (auto r = write_file(*m / "dirty", dirty_mib * kMiB, 1000 + i); !r)
      return die(r.error().message());
    SnapshotTimes times;
    auto t0 = std::chrono::steady_clock::now();
    auto snap = pool.snapshot(*origin, {}, &times);
    if (!snap) return die(snap.error().message());
    snap_ms.push_back(ms_since(t0));
    frozen_ms.push_back(ms(times.frozen));
    flush_ms.push_back(ms(times.flush));
    status_ms.push_back(ms(times.status));
    txn_ms.push_back(ms(times.txn_message));
    suspend_ms.push_back(ms(times.suspend));
    create_ms.push_back(ms(times.create_snap));
    resume_ms.push_back(ms(times.resume));
    auto t1 = std::chrono::steady_clock::now();
    auto clone = pool.activate(*snap, (*tp)->name("clone"), volume_bytes);
    if (!clone) return die(clone.error().message());
    total_ms.push_back(ms_since(t0));
    activate_ms.push_back(ms_since(t1));
    if (auto r = pool.deactivate(clone->name); !r) return die(r.error().message());
    // Outside the timed call: one status read each way. No-commit first,
    // so the committing one finds the same work left to commit as the
    // snapshot's own read would have (whatever the deactivate left).
    auto t2 = std::chrono::steady_clock::now();
    if (auto r = status(pool.name(), {.commit_metadata = false}); !r)
      return die(r.error().message());
    nocommit_ms.push_back(ms_since(t2));
    auto t3 = std::chrono::steady_clock::now();
    if (auto r = status(pool.name(), {.commit_metadata = true}); !r)
      return die(r.error().message());
    commit_ms.push_back(ms_since(t3));
  }
  std::printf(
      "lib data_mib=%llu existing=%d dirty_mib=%llu flush=%s snapshot_ms=%.1f frozen_ms=%.1f "
      "flush_ms=%.1f total_ms=%.1f status_ms=%.1f txn_ms=%.1f suspend_ms=%.1f "
      "create_snap_ms=%.1f resume_ms=%.1f activate_ms=%.1f status_commit_ms=%.1f "
      "status_nocommit_ms=%.1f\n",
      static_cast<unsigned long long>(data_mib), existing,
      static_cast<unsigned long long>(dirty_mib), flush ? "on" : "off", median(snap_ms),
      median(frozen_ms), median(flush_ms), median(total_ms), median(status_ms), median(txn_ms),
      median(suspend_ms), median(create_ms), median(resume_ms), median(activate_ms),
      median(commit_ms), median(nocommit_ms));
  return 0;
}
