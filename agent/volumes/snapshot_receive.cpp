// snapshot.receive: a send stream becomes a snapshot of this pool
// (docs/send-receive.md).
//
// The received snapshot is written in place: a new thin id (full stream) or
// a snapshot of the base (incremental), active under a temporary dm name
// while the stream is written into it, then deactivated. Its catalog row is
// `creating` from before the kernel call to after the end record checked
// out, with the temporary dm name in it: a failure deletes the device and
// the row (Rollback below), and a crash leaves a `creating` row that
// recovery rolls back the same way (reconcile.h). Nothing is visible as a
// snapshot until the whole stream was verified.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
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

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;

Status write_at(int fd, const std::uint8_t* p, std::size_t bytes, off_t at,
                const std::string& path) {
  std::size_t done = 0;
  while (done < bytes) {
    ssize_t n = ::pwrite(fd, p + done, bytes - done, at + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("write received blocks to", path);
    done += static_cast<std::size_t>(n);
  }
  return {};
}

std::optional<StepInfo> step_from(const json& j) {
  if (!j.is_object()) return std::nullopt;
  StepInfo s;
  s.pipeline = j.value("pipeline", "");
  s.run = j.value("run", "");
  s.step = j.value("step", "");
  s.phase = parse_phase(j.value("phase", "pre")).value_or(Phase::pre);
  s.command = j.value("command", "");
  if (j.contains("exit_status") && j["exit_status"].is_number_integer()) {
    s.exit_status = j["exit_status"].get<int>();
  }
  if (s.pipeline.empty() || s.run.empty()) return std::nullopt;
  return s;
}

Labels labels_from(const json& j) {
  Labels out;
  if (!j.is_object()) return out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.value().is_string() && !name_problem(it.key())) out.emplace(it.key(), it.value());
  }
  return out;
}

}  // namespace

Result<ReceiveResult> Volumes::receive_snapshot(int in, const std::optional<std::string>& name,
                                                const Ownership& who) {
  const std::string op = "receive snapshot";
  PhaseClock clock;
  widen_pipe(in);
  StreamReader reader(in);
  StreamDecoder dec([&reader](std::span<std::uint8_t> b) { return reader.read(b); });
  auto header = dec.header();
  if (!header) return tl::unexpected(header.error().context(op));
  clock.mark("header (waits for the sender)");
  const json& meta = header->snapshot;
  const std::string uuid = meta["uuid"].get<std::string>();
  const std::string snap_name = name.value_or(meta["name"].get<std::string>());
  if (auto problem = name_problem(snap_name)) {
    return fail(op, snap_name, EINVAL, *problem + "; give another with --name");
  }
  if (auto free = name_is_free(op, snap_name); !free) return tl::unexpected(free.error());
  auto same = catalog_.find_device_by_uuid(record_.id, uuid);
  if (!same) return tl::unexpected(same.error());
  if (*same) {
    return fail(op, snap_name, EEXIST,
                "this pool already has that snapshot (uuid " + uuid + ") as " + (*same)->name);
  }
  std::optional<DeviceRecord> base;
  if (header->incremental()) {
    const std::string base_uuid = header->base["uuid"].get<std::string>();
    const std::string base_label = header->base.value("name", std::string("?"));
    auto b = catalog_.find_device_by_uuid(record_.id, base_uuid);
    if (!b) return tl::unexpected(b.error());
    if (!*b || (*b)->kind != DeviceKind::snapshot || (*b)->state != DeviceState::created) {
      return fail(op, snap_name, ENOENT,
                  "its base " + base_label + " (uuid " + base_uuid + ") is not in pool " +
                      record_.name + "; receive that snapshot first, or send a full stream");
    }
    if ((*b)->size_bytes != header->volume_bytes) {
      return fail(op, snap_name, EINVAL,
                  "its base " + (*b)->name + " here has another size than the stream's volume");
    }
    base = **b;
  }

  // Room first: refusing now leaves nothing to undo. Zero runs free space.
  const std::uint64_t need_bytes = header->data_blocks * header->block_bytes;
  {
    std::lock_guard lock(kernel_mutex_);
    clock.mark("checks");
    auto st = pool_.status();
    if (!st) return tl::unexpected(st.error().context(op));
    const std::uint64_t free_bytes = st->free_data_blocks() * pool_.block_bytes();
    if (need_bytes > free_bytes) {
      Error e{op,
              snap_name,
              ENOSPC,
              "the stream carries " + std::to_string(need_bytes) + " bytes and pool " +
                  record_.name + " has " + std::to_string(free_bytes) +
                  " free; make room (delete snapshots) or receive on another pool",
              {}};
      e.kind = "out_of_data_space";
      return tl::unexpected(e);
    }
    clock.mark("pool status");
  }

  json from = {{"node", header->source.value("node", "")},
               {"pool", header->source.value("pool", "")},
               {"name", meta["name"]},
               {"created", meta.value("created", "")}};
  if (meta.contains("parent_uuid")) from["parent_uuid"] = meta["parent_uuid"];
  if (meta.contains("origin")) from["origin"] = meta["origin"];
  if (header->incremental()) from["base_uuid"] = header->base["uuid"];

  // Kernel: the thin id (its intent written from the pool's hook), then the
  // temporary activation. The dm name is in the intent for recovery.
  std::optional<Intent> intent;
  std::string dm_name;
  dm::ThinId thin_id = 0;
  auto before = [&](dm::ThinId id) -> Status {
    dm_name = record_.name + "-recv-" + std::to_string(id);
    CreateSpec spec{.pool_id = record_.id,
                    .name = snap_name,
                    .kind = DeviceKind::snapshot,
                    .size_bytes = header->volume_bytes,
                    .labels = labels_from(meta.value("labels", json::object())),
                    .step = step_from(meta.value("step", json())),
                    .thin_id = id,
                    .owner_uid = who.uid,
                    .dm_name = dm_name,
                    .uuid = uuid,
                    .received_from = from.dump(),
                    .parent_id = base ? std::optional<std::int64_t>(base->id) : std::nullopt};
    auto i = catalog_.begin_create(spec);
    if (!i) return tl::unexpected(i.error());
    intent = *i;
    return {};
  };
  // Undoes whatever was made, however the function leaves before commit.
  struct Rollback {
    Volumes& v;
    std::optional<Intent>& intent;
    std::string& dm_name;
    dm::ThinId& thin_id;
    bool armed = true;
    Error why{"receive snapshot", "", ECANCELED, "stopped before the end", {}};
    ~Rollback() {
      if (!armed || !intent) return;
      std::lock_guard lock(v.kernel_mutex_);
      bool exists = false;
      if (auto r = v.pool_.deactivate(dm_name); !r) {
        log::error("receive: " + r.error().message());
        exists = true;
      } else if (thin_id != 0) {
        if (auto d = v.pool_.delete_thin(thin_id); !d) {
          log::error("receive: " + d.error().message());
          exists = d.error().err != ENODATA;
        }
      }
      if (auto a = v.catalog_.abort_create(*intent, why, exists); !a) {
        log::error("receive: " + a.error().message());
      }
    }
  } rollback{*this, intent, dm_name, thin_id};

  dm::ThinVolume device;
  {
    std::lock_guard lock(kernel_mutex_);
    auto id = base ? pool_.snapshot(static_cast<dm::ThinId>(base->thin_id), before)
                   : pool_.create_thin(before);
    if (!id) {
      if (intent) (void)catalog_.abort_create(*intent, id.error(), false);
      intent.reset();
      report_failure(op, id.error());
      return tl::unexpected(id.error().context(op + " " + snap_name));
    }
    thin_id = *id;
    clock.mark(base ? "snapshot of the base" : "create thin");
    auto active = pool_.activate(thin_id, dm_name, header->volume_bytes);
    if (!active) {
      rollback.why = active.error();
      return tl::unexpected(active.error().context(op + " " + snap_name));
    }
    device = *active;
    clock.mark("activate");
  }

  auto failed = [&](Error e) -> tl::unexpected<Error> {
    rollback.why = e;
    if (dm::kind_of(e) != dm::ErrorKind::none || e.err == ENOSPC) report_failure(op, e);
    return tl::unexpected(e.context(op + " " + snap_name));
  };
  const std::string path = device.path();
  UniqueFd dev(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!dev) return failed(fail_errno("open", path).value());
  // Whole pool blocks can be unmapped with a discard; anything else is
  // written as zeros (a partial discard would leave old data mapped).
  const bool discard_unmaps = header->block_bytes % pool_.block_bytes() == 0;
  for (;;) {
    auto rec = dec.next();
    if (!rec) return failed(rec.error());
    if (rec->kind == StreamRecord::Kind::end) break;
    const std::uint64_t at = rec->first_block * header->block_bytes;
    const std::uint64_t bytes =
        std::min<std::uint64_t>(rec->count * header->block_bytes, header->volume_bytes - at);
    if (rec->kind == StreamRecord::Kind::data) {
      if (auto r = write_at(dev.get(), rec->payload.data(), bytes, static_cast<off_t>(at), path);
          !r) {
        return failed(r.error());
      }
      // Start writing these pages back now, while the next records arrive,
      // rather than all at the flush after the last (a hint: errors show
      // at that flush).
      (void)::sync_file_range(dev.get(), static_cast<off_t>(at), static_cast<off_t>(bytes),
                              SYNC_FILE_RANGE_WRITE);
    } else {
      std::uint64_t range[2] = {at, bytes};
      if (!discard_unmaps || ::ioctl(dev.get(), BLKDISCARD, range) != 0) {
        if (::ioctl(dev.get(), BLKZEROOUT, range) != 0) {
          return failed(fail_errno("zero unmapped blocks of", path).value());
        }
      }
    }
  }
  clock.mark("records");
  if (::fsync(dev.get()) != 0) return failed(fail_errno("flush", path).value());
  dev.reset();
  clock.mark("flush");

  ReceiveResult result;
  result.bytes = dec.bytes_read();
  result.data_blocks = header->data_blocks;
  result.zero_blocks = header->zero_blocks;
  {
    std::lock_guard lock(kernel_mutex_);
    if (auto r = pool_.deactivate(dm_name); !r) return failed(r.error());
    clock.mark("deactivate");
    auto st = in_transaction(catalog_.db(), [&]() -> Status {
      if (auto r = catalog_.finish_create(*intent, "", header->incremental() ? 0 : need_bytes); !r)
        return r;
      auto d = catalog_.get_device(intent->device_id);
      if (!d) return tl::unexpected(d.error());
      json data = device_json(*d);
      data["uuid"] = d->uuid;
      data["received_from"] = from;
      if (auto e = events_.append(EventType::snapshot_created, data); !e) {
        return tl::unexpected(e.error());
      }
      result.snapshot = *d;
      return {};
    });
    if (!st) return failed(st.error());
    rollback.armed = false;
    clock.mark("catalog");
  }
  check_space();
  clock.mark("space check");
  log::info(op + " " + snap_name + (base ? " on base " + base->name : std::string()) + ": " +
            std::to_string(header->data_blocks) + " blocks, " + clock.summary());
  return result;
}

}  // namespace stepsnap::agent
