// snapshot.send: a snapshot as a stream (docs/send-receive.md).
//
// Where the data comes from: stepsnapd owns the pool, so it writes the
// stream itself, to a descriptor the client passed over the socket. It
// never activates the snapshot: with the pool's metadata snapshot held,
// its btrees, read in process (dm/metadata_mappings.h), name the data block
// each virtual block of the snapshot (and of the base) maps to, and the
// data is read from the pool's data device at those blocks. The held metadata snapshot keeps every
// block it maps allocated, so nothing can reuse them before the stream ends, and it is released on
// every path (a crash leaves it held; the agent releases a left-over one at start).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "agent/volumes/phase_clock.h"
#include "agent/volumes/send_stream.h"
#include "agent/volumes/stream_fd.h"
#include "agent/volumes/volumes.h"
#include "common/log.h"
#include "common/unique_fd.h"
#include "dm/metadata_mappings.h"
#include "dm/thin_mappings.h"

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;

// An O_DIRECT buffer (the data device is read past the page cache: the
// kernel writes it through dm-thin, never through that cache).
struct AlignedBuffer {
  explicit AlignedBuffer(std::size_t bytes) : size(bytes) {
    void* p = nullptr;
    if (::posix_memalign(&p, 4096, bytes) == 0) data.reset(static_cast<std::uint8_t*>(p));
  }
  struct Free {
    void operator()(std::uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<std::uint8_t, Free> data;
  std::size_t size;
};

}  // namespace

// The snapshot's catalog metadata, as the header carries it.
static json snapshot_meta(Catalog& catalog, const DeviceRecord& d) {
  json j = device_json(d);
  j["uuid"] = d.uuid;
  for (const char* local : {"id", "thin_id", "state", "origin_id", "parent_id", "owner_uid"}) {
    j.erase(local);
  }
  if (d.origin_id) {
    if (auto o = catalog.get_device(*d.origin_id)) j["origin"] = o->name;
  }
  if (d.parent_id) {
    if (auto p = catalog.get_device(*d.parent_id)) {
      j["parent_uuid"] = p->uuid;
      j["parent"] = p->name;
    }
  }
  if (!d.received_from.empty()) {
    auto from = json::parse(d.received_from, nullptr, false);
    if (!from.is_discarded()) j["received_from"] = from;
  }
  return j;
}

Result<SendResult> Volumes::send_snapshot(const std::string& name,
                                          const std::optional<std::string>& base_name, int out,
                                          const std::string& node) {
  const std::string op = "send snapshot";
  PhaseClock clock;
  auto snap = origin_for(name, true, op);
  if (!snap) return tl::unexpected(snap.error());
  std::optional<DeviceRecord> base;
  if (base_name) {
    auto b = origin_for(*base_name, true, op + " " + name + " on base");
    if (!b) return tl::unexpected(b.error());
    if (b->id == snap->id) {
      return fail(op, name, EINVAL, "the base is the snapshot itself; give an older snapshot");
    }
    if (b->size_bytes != snap->size_bytes) {
      return fail(op, name, EINVAL,
                  "base " + b->name + " has another size; give a snapshot of the same volume");
    }
    base = *b;
  }

  // Held from the dump to the last byte read (see the top of this file).
  std::optional<dm::MetadataSnapGuard> held;
  dm::MappingDelta delta;
  std::string data_path;
  std::uint64_t block_bytes = 0;
  {
    std::lock_guard lock(kernel_mutex_);
    clock.mark("checks");
    auto h = pool_.hold_metadata_snapshot();
    if (!h) return tl::unexpected(h.error().context(op + " " + name));
    held.emplace(std::move(*h));
    clock.mark("reserve metadata snapshot");
    auto meta = pool_.metadata_device_path();
    if (!meta) return tl::unexpected(meta.error().context(op));
    auto data = pool_.data_device_path();
    if (!data) return tl::unexpected(data.error().context(op));
    data_path = *data;
    block_bytes = pool_.block_bytes();
    // The kernel commits when it reserves, so the status names where the
    // held copy of the superblock is and everything under it is on disk.
    auto st = pool_.status();
    if (!st) return tl::unexpected(st.error().context(op));
    if (!st->held_metadata_root) {
      return fail(op, name, EIO, "the pool reports no held metadata root after reserving one");
    }
    auto reader = dm::open_metadata_device(*meta);
    if (!reader) return tl::unexpected(reader.error().context(op));
    clock.mark("open metadata");
    auto target = dm::thin_mappings_in_snapshot(*reader, *st->held_metadata_root, snap->thin_id);
    if (!target) return tl::unexpected(target.error().context(op + " " + name));
    clock.mark("read snapshot mappings");
    std::vector<dm::BlockMapping> from;
    if (base) {
      auto b = dm::thin_mappings_in_snapshot(*reader, *st->held_metadata_root, base->thin_id);
      if (!b) return tl::unexpected(b.error().context(op + " base " + base->name));
      from = std::move(*b);
      clock.mark("read base mappings");
    }
    delta = dm::mapping_delta(*target, from);
    clock.mark("diff");
  }

  StreamHeader header;
  header.block_bytes = block_bytes;
  header.volume_bytes = snap->size_bytes;
  const std::uint64_t volume_blocks = (snap->size_bytes + block_bytes - 1) / block_bytes;
  for (const auto& m : delta.changed) {
    if (m.virt + m.length > volume_blocks) {
      return fail(op, name, EIO, "the pool maps blocks past the volume's end");
    }
    header.data_blocks += m.length;
  }
  for (const auto& u : delta.unmapped) header.zero_blocks += u.length;
  header.snapshot = snapshot_meta(catalog_, *snap);
  if (base) header.base = {{"uuid", base->uuid}, {"name", base->name}};
  header.source = {{"node", node}, {"pool", record_.name}};

  UniqueFd data_fd(::open(data_path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
  if (!data_fd) return fail_errno(op + ": open the pool's data device", data_path);

  widen_pipe(out);
  StreamWriter writer(out);
  StreamEncoder enc([&writer](std::span<const std::uint8_t> b) { return writer.write(b); });
  if (auto r = enc.header(header); !r) return tl::unexpected(r.error().context(op + " " + name));
  AlignedBuffer buf(kMaxRunBlocks * block_bytes);
  if (!buf.data) return fail(op, name, ENOMEM);
  // The data records, none longer than kMaxRunBlocks.
  std::vector<dm::BlockMapping> records;
  for (const auto& m : delta.changed) {
    for (std::uint64_t done = 0; done < m.length;) {
      const std::uint64_t count = std::min<std::uint64_t>(m.length - done, kMaxRunBlocks);
      records.push_back({m.virt + done, m.data + done, count});
      done += count;
    }
  }
  // One read for consecutive records whose data blocks follow each other
  // on the data device: blocks written one after another get consecutive
  // data blocks whatever their virtual ones, so a change scattered over
  // the volume costs a few reads, not one per block.
  for (std::size_t i = 0; i < records.size();) {
    std::size_t j = i + 1;
    std::uint64_t blocks = records[i].length;
    while (j < records.size() && records[j].data == records[j - 1].data + records[j - 1].length &&
           blocks + records[j].length <= kMaxRunBlocks) {
      blocks += records[j].length;
      ++j;
    }
    const std::size_t bytes = blocks * block_bytes;
    const auto at = static_cast<off_t>(records[i].data * block_bytes);
    std::size_t got = 0;
    while (got < bytes) {
      ssize_t n =
          ::pread(data_fd.get(), buf.data.get() + got, bytes - got, at + static_cast<off_t>(got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail_errno(op + ": read the pool's data device", data_path);
      if (n == 0) return fail(op, data_path, EIO, "the data device ends before a mapped block");
      got += static_cast<std::size_t>(n);
    }
    std::size_t off = 0;
    for (; i < j; ++i) {
      const std::size_t run_bytes = records[i].length * block_bytes;
      if (auto r = enc.data(records[i].virt, static_cast<std::uint32_t>(records[i].length),
                            {buf.data.get() + off, run_bytes});
          !r) {
        return tl::unexpected(r.error().context(op + " " + name));
      }
      off += run_bytes;
    }
  }
  for (const auto& u : delta.unmapped) {
    for (std::uint64_t done = 0; done < u.length;) {
      auto count =
          static_cast<std::uint32_t>(std::min<std::uint64_t>(u.length - done, kMaxRunBlocks));
      if (auto r = enc.zero(u.begin + done, count); !r) {
        return tl::unexpected(r.error().context(op + " " + name));
      }
      done += count;
    }
  }
  if (auto r = enc.end(); !r) return tl::unexpected(r.error().context(op + " " + name));
  if (auto r = writer.flush(); !r) return tl::unexpected(r.error().context(op + " " + name));
  clock.mark("data");
  held.reset();
  clock.mark("release metadata snapshot");
  log::info(op + " " + name + (base ? " on base " + base->name : std::string()) + ": " +
            std::to_string(header.data_blocks) + " blocks, " + clock.summary());
  return SendResult{enc.bytes_written(), header.data_blocks, header.zero_blocks, block_bytes,
                    base.has_value()};
}

}  // namespace stepsnap::agent
