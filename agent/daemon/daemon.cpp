#include "agent/daemon/daemon.h"

#include <grp.h>
#include <malloc.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "agent/daemon/ownership.h"
#include "agent/daemon/recovery.h"
#include "common/log.h"
#include "dm/dm_task.h"

namespace stepsnap::agent {

namespace {

// A directory that existed keeps its mode (it may be shared, like /tmp);
// one that is private by intent (mode 0700) but open to others is named in
// the log, since the catalog and the pool's loop files hold users' data.
Status make_dirs(const std::string& dir, mode_t mode) {
  auto made = make_owned_dirs(dir, mode);
  if (!made) return tl::unexpected(made.error());
  struct stat st {};
  if ((mode & 077) == 0 && made->empty() && ::stat(dir.c_str(), &st) == 0 &&
      (st.st_mode & 077) != 0) {
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    log::warn("directory " + dir + " is mode " + octal +
              ": other users may read what stepsnapd keeps there; chmod 0700 it");
  }
  return {};
}

// Formatting writes a new, empty superblock over the old one: every thin
// device of a pool already on that device is gone. The daemon formats only
// devices that do not hold a pool, unless --format-pool says otherwise.
Status refuse_to_format_a_pool(const DaemonOptions& o, const std::string& meta_dev) {
  auto sb = thin_pool_superblock(meta_dev);
  if (!sb) return tl::unexpected(sb.error().context("check before formatting"));
  if (!*sb) return {};
  if (o.format_pool) {
    log::warn("--format-pool: formatting " + meta_dev +
              ", which held a thin pool (transaction id " + std::to_string(**sb) +
              "); every volume of that pool is gone");
    return {};
  }
  return fail("format pool metadata", meta_dev, EEXIST,
              "it already holds a thin pool (transaction id " + std::to_string(**sb) +
                  ") that catalog " + o.catalog_path() +
                  " does not know; stepsnapd formats only empty devices: put back the catalog "
                  "that belongs to this pool, or, to destroy every volume on it, start once "
                  "with --format-pool");
}

Result<std::optional<gid_t>> socket_group(const std::string& name) {
  if (name.empty()) return std::optional<gid_t>{};
  errno = 0;
  struct group* g = ::getgrnam(name.c_str());
  if (g == nullptr) {
    return fail(
        "--socket-group", name, errno ? errno : ENOENT,
        "no such group; create it (groupadd " + name + ") or pass --socket-group '' for root only");
  }
  return std::optional<gid_t>{g->gr_gid};
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

Status Daemon::open_pool(const DaemonOptions& o) {
  const std::string dm_name = pool_dm_name(o.pool.name);
  auto known = catalog_->find_pool(o.pool.name);
  if (!known) return tl::unexpected(known.error());

  std::string data_dev = o.pool.data_device;
  std::string meta_dev = o.pool.metadata_device;
  std::string data_rec = data_dev, meta_rec = meta_dev;
  std::optional<std::uint64_t> recorded;
  if (*known) recorded = (*known)->transaction_id;
  if (dm::exists(dm_name)) {
    // With the recorded id, a pool changed since is a stale_view error;
    // check_transaction_id() decides what that means.
    auto p = dm::ThinPool::open(dm_name, recorded);
    if (!p && p.error().kind == to_string(dm::ErrorKind::stale_view))
      p = dm::ThinPool::open(dm_name);
    if (!p) return tl::unexpected(p.error());
    pool_.emplace(std::move(*p));
    log::info("opened pool " + dm_name);
    if (!o.pool.loop_dir.empty()) {
      data_rec = o.pool.loop_dir + "/data.img";
      meta_rec = o.pool.loop_dir + "/metadata.img";
    }
  } else {
    bool format = !*known;
    if (!o.pool.loop_dir.empty()) {
      if (auto r = make_dirs(o.pool.loop_dir, 0700); !r) return r;
      data_rec = o.pool.loop_dir + "/data.img";
      meta_rec = o.pool.loop_dir + "/metadata.img";
      bool have = file_exists(data_rec) && file_exists(meta_rec);
      // One file without the other is never ours to format: the survivor
      // may hold every volume's data.
      if (!have && (file_exists(data_rec) || file_exists(meta_rec))) {
        return fail(dm_name, "", ENOENT,
                    "only one of " + data_rec + " and " + meta_rec +
                        " exists; restore the other, or move both away to start an empty pool");
      }
      // New loop files under a catalog that recorded changes to the pool:
      // every device it names is gone. Formatting a new pool under it
      // would leave the catalog pointing at nothing.
      if (!have && *known && recorded.value_or(0) != 0) {
        return fail(dm_name, "", ENOENT,
                    "its loop files in " + o.pool.loop_dir + " are gone but catalog " +
                        o.catalog_path() +
                        " records devices on it; restore the files (or move the catalog away "
                        "to start with an empty pool: the volumes it names are lost already)");
      }
      for (const auto& [file, size] : {std::pair{meta_rec, o.pool.loop_metadata_bytes},
                                       std::pair{data_rec, o.pool.loop_data_bytes}}) {
        auto loop = have ? dm::LoopDevice::attach(file) : dm::LoopDevice::create_file(file, size);
        if (!loop) return tl::unexpected(loop.error().context("pool loop file"));
        loops_.push_back(std::move(*loop));
      }
      meta_dev = loops_[0].path();
      data_dev = loops_[1].path();
      format = !have || !*known;
    } else if (!*known) {
      log::warn("pool " + o.pool.name + " is new to the catalog: formatting metadata device " +
                meta_dev);
    }
    if (format) {
      if (auto r = refuse_to_format_a_pool(o, meta_dev); !r) return r;
    }
    dm::PoolConfig cfg{.name = dm_name,
                       .data_dev = data_dev,
                       .metadata_dev = meta_dev,
                       .block_sectors = static_cast<std::uint32_t>(o.pool.block_bytes / 512),
                       .format = format};
    auto p = dm::ThinPool::create(cfg);
    if (!p) return tl::unexpected(p.error());
    pool_.emplace(std::move(*p));
    log::info(std::string(format ? "created" : "re-created") + " pool " + dm_name + " on " +
              data_dev + " + " + meta_dev);
  }
  if (*known) {
    pool_record_ = **known;
    if (auto r = check_transaction_id(o); !r) return r;
  } else {
    auto rec = catalog_->add_pool(PoolSpec{.name = o.pool.name,
                                           .data_device = data_rec,
                                           .metadata_device = meta_rec,
                                           .block_bytes = o.pool.block_bytes});
    if (!rec) return tl::unexpected(rec.error());
    pool_record_ = *rec;
  }
  // From now on every change the pool view makes is recorded, so the next
  // start can tell whether the pool changed behind the catalog's back.
  const std::int64_t pool_id = pool_record_->id;
  pool_->on_transaction_change([this, pool_id](std::uint64_t txn) {
    if (auto r = catalog_->set_transaction_id(pool_id, txn); !r) {
      log::warn(r.error().message() + "; the next start will reconcile the pool");
    }
  });
  return {};
}

// What the daemon does when the pool's transaction id is not the one it
// recorded after its last change (dm/thin_ids.h, compare_txn):
//   ahead     the pool saw more changes: ours interrupted by a crash (the
//             id is bumped before each change and recorded after), or
//             another user of the same id scheme. Recovery reconciles the
//             catalog with what the pool holds: one agent.recovered event,
//             then go on.
//   behind,   the pool's metadata is older than the catalog (restored from
//   diverged  a backup, replaced) or was changed by another tool: ids the
//             catalog names may be missing or reused, which no automatic
//             repair can tell apart. Refuse to start, saying what to do.
Status Daemon::check_transaction_id(const DaemonOptions& o) {
  auto recorded = pool_record_->transaction_id;
  std::uint64_t kernel = pool_->transaction_id();
  if (!recorded || *recorded == kernel) return {};
  auto relation = dm::compare_txn(*recorded, kernel);
  const std::string numbers = "transaction id " + std::to_string(kernel) + ", catalog recorded " +
                              std::to_string(*recorded);
  if (relation == dm::TxnRelation::ahead) {
    log::warn("pool " + pool_->name() + ": " + numbers +
              ": it changed since stepsnapd last recorded it; reconciling");
    auto e = events_->append(EventType::agent_recovered,
                             {{"action", "resync_transaction_id"},
                              {"pool", o.pool.name},
                              {"transaction_id", kernel},
                              {"recorded_transaction_id", *recorded},
                              {"reason",
                               "the pool changed after stepsnapd last recorded it "
                               "(a change interrupted by a crash, or another agent); "
                               "recovery reconciles the catalog with it"},
                              {"ok", true}});
    if (!e) return tl::unexpected(e.error());
    return {};
  }
  const std::string why = relation == dm::TxnRelation::behind
                              ? "the pool's metadata is older than the catalog (replaced or "
                                "rolled back)"
                              : "the id was set outside stepsnapd";
  return fail(pool_->name(), "", 0,
              numbers + ": " + why + "; restore the metadata that matches " + o.catalog_path() +
                  ", or the catalog backup that matches this pool (a catalog moved away does "
                  "not help: stepsnapd never formats a device holding a pool unless started "
                  "with --format-pool, which destroys every volume on it)");
}

Result<std::unique_ptr<Daemon>> Daemon::start(const DaemonOptions& o) {
  std::unique_ptr<Daemon> d(new Daemon());
  if (auto r = make_dirs(o.state_dir, 0700); !r) return tl::unexpected(r.error());
  // Only directories the daemon makes get its mode: the socket's directory
  // may be a shared one such as /tmp.
  auto sock_dir = std::filesystem::path(o.socket_path).parent_path().string();
  if (auto r = make_dirs(sock_dir, 0755); !r) return tl::unexpected(r.error());
  auto group = socket_group(o.socket_group);
  if (!group) return tl::unexpected(group.error());

  auto db = Database::open(o.catalog_path());
  if (!db) return tl::unexpected(db.error().context("open catalog"));
  d->db_ = *db;
  auto catalog = Catalog::open(d->db_);
  if (!catalog) return tl::unexpected(catalog.error().context("open catalog"));
  d->catalog_.emplace(std::move(*catalog));
  auto events =
      EventLog::open(d->db_, {.retain = o.event_retention, .file_path = o.event_log_file});
  if (!events) return tl::unexpected(events.error().context("open event log"));
  d->events_ = std::move(*events);
  log::info("catalog " + o.catalog_path() + ", last event seq " +
            std::to_string(d->events_->last_seq()));

  if (auto r = d->open_pool(o); !r) return tl::unexpected(r.error().context("pool"));

  auto rec = recover(*d->catalog_, *d->events_, *d->pool_, *d->pool_record_);
  if (!rec) return tl::unexpected(rec.error().context("recovery"));
  log::info("recovery: " + std::to_string(rec->repairs) + " repairs, " +
            std::to_string(rec->failures) + " failures");
  // Recovery's read of every device row is freed by now, but glibc keeps
  // freed heap pages mapped; give them back, or a daemon that started on a
  // catalog of 100,000 snapshots keeps that read's peak as its resident size.
  ::malloc_trim(0);
  if (auto r = d->pool_->resync(); !r) return tl::unexpected(r.error());
  // The pool as recovery left it is what the catalog now describes (an
  // ahead pool has been reconciled): that id is the record from here on.
  if (auto r = d->catalog_->set_transaction_id(d->pool_record_->id, d->pool_->transaction_id());
      !r) {
    return tl::unexpected(r.error().context("pool"));
  }
  auto fresh = d->catalog_->get_pool(d->pool_record_->id);
  if (fresh) d->pool_record_ = *fresh;

  d->volumes_ = std::make_unique<Volumes>(*d->catalog_, *d->events_, *d->pool_, *d->pool_record_,
                                          o.pool.low_space_percent);
  StepPolicyOptions policy_options;
  policy_options.hold_timeout = std::chrono::seconds(o.hold_timeout_seconds);
  policy_options.step_lease = std::chrono::seconds(o.step_lease_seconds);
  policy_options.tracer.pin_dir = o.bpf_pin_dir;
  policy_options.cgroup_subtree = o.step_cgroup_root;
  // The policy first: steps whose pinned watch survived are taken over
  // (and their snapshots due taken) before anything else.
  auto policy = StepPolicy::start(*d->volumes_, *d->catalog_, *d->events_, policy_options);
  if (policy) {
    d->policy_ = std::move(*policy);
  } else {
    log::error(policy.error().message() + "; step snapshots are off until this is fixed");
  }
  Result<std::string> subtree =
      o.step_cgroup_root.empty() ? default_step_cgroup_subtree() : o.step_cgroup_root;
  if (!subtree) log::warn("step cgroups: " + subtree.error().message());
  static const std::set<std::string> kNone;
  auto steps = fail_interrupted_steps(*d->catalog_, *d->events_, subtree ? *subtree : "",
                                      d->policy_ ? d->policy_->adopted() : kNone);
  if (!steps) return tl::unexpected(steps.error().context("recovery"));
  if (steps->repairs + steps->failures) {
    log::info("recovery: " + std::to_string(steps->repairs) + " interrupted steps marked failed");
  }
  auto rules = RetentionStore::open(o.retention, o.retention_file());
  if (!rules) return tl::unexpected(rules.error());
  d->retention_ = std::make_unique<RetentionSweeper>(*d->volumes_, *d->events_, std::move(*rules));
  d->handler_ = std::make_unique<DaemonHandler>(
      *d->volumes_, *d->events_, d->policy_.get(),
      HandlerLimits{.max_steps_per_peer = o.max_steps_per_peer}, d->retention_.get());
  auto server =
      ApiServer::start({.socket_path = o.socket_path,
                        .group = *group,
                        .max_connections_per_uid = o.max_connections_per_uid,
                        .request_timeout = std::chrono::seconds(o.request_timeout_seconds)},
                       *d->handler_);
  if (!server) return tl::unexpected(server.error().context("serve API"));
  d->server_ = std::move(*server);
  log::info("serving on " + o.socket_path);
  // The sweep's thread: on its timer, and on every pool.low_space.
  d->retention_->start(std::chrono::seconds(o.gc_interval_seconds));
  if (o.http) {
    auto view = ViewServer::start(
        {.listen = *o.http,
         .catalog_path = o.catalog_path(),
         .low_space_percent = o.pool.low_space_percent,
         .wait_for_event =
             [events = d->events_.get()](std::uint64_t since, std::chrono::milliseconds timeout) {
               events->wait_for(since, timeout);
             },
         .socket_requests = [server = d->server_.get()] { return server->request_counts(); }});
    if (!view) return tl::unexpected(view.error());
    d->view_ = std::move(*view);
    ListenAddress bound = *o.http;
    bound.port = d->view_->port();
    log::info("HTTP view on http://" + bound.text() + "/");
    if (!o.http->loopback) {
      log::warn("--http-listen " + o.http->text() +
                " is not a loopback address: anyone who can reach it reads every pipeline, run, "
                "snapshot and label; the view has no authentication (put it behind an "
                "authenticating proxy, or use 127.0.0.1)");
    }
  } else {
    log::info("HTTP view off (--http-listen \"\")");
  }
  return d;
}

void Daemon::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (retention_) retention_->stop();  // a sweep under way finishes first
  if (view_) view_->stop();            // before the event log it waits on goes
  if (events_) events_->close();       // wakes followers so the server can end them
  if (server_) server_->stop();
  if (policy_) policy_->stop();
  log::info("stopped; volumes stay active");
}

Daemon::~Daemon() { stop(); }

}  // namespace stepsnap::agent
