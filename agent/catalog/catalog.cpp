#include "agent/catalog/catalog.h"

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>

#include "agent/catalog/catalog_schema.h"
#include "common/enum_names.h"
#include "common/time.h"

namespace stepsnap::agent {

namespace {

constexpr std::pair<DeviceKind, std::string_view> kKinds[] = {{DeviceKind::volume, "volume"},
                                                              {DeviceKind::snapshot, "snapshot"},
                                                              {DeviceKind::clone, "clone"}};
constexpr std::pair<DeviceState, std::string_view> kStates[] = {{DeviceState::creating, "creating"},
                                                                {DeviceState::created, "created"},
                                                                {DeviceState::deleting, "deleting"},
                                                                {DeviceState::faulty, "faulty"}};
constexpr std::pair<Phase, std::string_view> kPhases[] = {
    {Phase::initial, "initial"}, {Phase::pre, "pre"}, {Phase::post, "post"}};
constexpr std::pair<OperationKind, std::string_view> kOpKinds[] = {
    {OperationKind::create, "create"}, {OperationKind::remove, "remove"}};
constexpr std::pair<OperationState, std::string_view> kOpStates[] = {
    {OperationState::pending, "pending"},
    {OperationState::done, "done"},
    {OperationState::failed, "failed"},
    {OperationState::rolled_back, "rolled_back"},
    {OperationState::completed_by_recovery, "completed_by_recovery"}};

#define TRY(expr)                                                 \
  do {                                                            \
    if (auto _r = (expr); !_r) return tl::unexpected(_r.error()); \
  } while (0)

constexpr const char* kDeviceColumns =
    "id, pool_id, name, kind, thin_id, origin_id, parent_id, state, dm_name, size_bytes, "
    "mapped_bytes, created_ns, fault, owner_uid, run_clone, uuid, received_from";

std::optional<RunCloneKey> parse_run_clone(const std::string& text) {
  auto a = text.find('/');
  auto b = a == std::string::npos ? a : text.find('/', a + 1);
  if (b == std::string::npos) return std::nullopt;
  return RunCloneKey{text.substr(0, a), text.substr(a + 1, b - a - 1), text.substr(b + 1)};
}

DeviceRecord read_device(const Statement& st) {
  DeviceRecord d;
  d.id = st.int64(0);
  d.pool_id = st.int64(1);
  d.name = st.text(2);
  d.kind = parse_device_kind(st.text(3)).value_or(DeviceKind::volume);
  d.thin_id = static_cast<std::uint32_t>(st.int64(4));
  d.origin_id = st.opt_int64(5);
  d.parent_id = st.opt_int64(6);
  d.state = parse_device_state(st.text(7)).value_or(DeviceState::faulty);
  d.dm_name = st.text(8);
  d.size_bytes = static_cast<std::uint64_t>(st.int64(9));
  d.mapped_bytes = static_cast<std::uint64_t>(st.int64(10));
  d.created_ns = st.int64(11);
  d.fault = st.text(12);
  d.owner_uid = static_cast<std::uint32_t>(st.int64(13));
  if (!st.is_null(14)) d.run_clone = parse_run_clone(st.text(14));
  d.uuid = st.opt_text(15).value_or("");
  d.received_from = st.opt_text(16).value_or("");
  return d;
}

PoolRecord read_pool(const Statement& st) {
  PoolRecord p;
  p.id = st.int64(0);
  p.name = st.text(1);
  p.data_device = st.text(2);
  p.metadata_device = st.text(3);
  p.block_bytes = static_cast<std::uint64_t>(st.int64(4));
  p.next_thin_id = static_cast<std::uint32_t>(st.int64(5));
  p.created_ns = st.int64(6);
  // Stored as SQLite's signed 64-bit integer; the bits are the dm value.
  if (auto t = st.opt_int64(7)) p.transaction_id = static_cast<std::uint64_t>(*t);
  return p;
}

constexpr const char* kPoolColumns =
    "id, name, data_device, metadata_device, block_bytes, next_thin_id, created_ns, "
    "transaction_id";

constexpr const char* kStepColumns =
    "pipeline, run, step, cgroup, cgroup_id, policy, volumes, command, labels, state, "
    "exit_status, error, registered_ns, started_ns, finished_ns, held_ns, pre_snapshots, "
    "post_snapshots";

// The JSON columns were written by save_step; a value that does not parse
// (a hand-edited database) reads as empty rather than failing the whole list.
std::vector<std::string> string_list(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  std::vector<std::string> out;
  if (!j.is_array()) return out;
  for (const auto& v : j)
    if (v.is_string()) out.push_back(v.get<std::string>());
  return out;
}

Labels string_map(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  Labels out;
  if (!j.is_object()) return out;
  for (const auto& [k, v] : j.items())
    if (v.is_string()) out.emplace(k, v.get<std::string>());
  return out;
}

StepRecord read_step(const Statement& st) {
  StepRecord r;
  r.pipeline = st.text(0);
  r.run = st.text(1);
  r.step = st.text(2);
  r.cgroup = st.text(3);
  r.cgroup_id = static_cast<std::uint64_t>(st.int64(4));
  r.policy = st.text(5);
  r.volumes = string_list(st.text(6));
  r.command = st.text(7);
  r.labels = string_map(st.text(8));
  r.state = st.text(9);
  if (auto e = st.opt_int64(10)) r.exit_status = static_cast<int>(*e);
  r.error = st.text(11);
  r.registered_ns = st.int64(12);
  r.started_ns = st.opt_int64(13).value_or(0);
  r.finished_ns = st.opt_int64(14).value_or(0);
  r.held_ns = st.int64(15);
  r.pre_snapshots = string_list(st.text(16));
  r.post_snapshots = string_list(st.text(17));
  return r;
}

// Runs fn inside a savepoint and commits it if fn succeeded.
}  // namespace

std::string_view to_string(DeviceKind k) { return name_of(k, kKinds); }
std::string_view to_string(DeviceState s) { return name_of(s, kStates); }
std::string_view to_string(Phase p) { return name_of(p, kPhases); }
std::string_view to_string(OperationKind k) { return name_of(k, kOpKinds); }
std::string_view to_string(OperationState s) { return name_of(s, kOpStates); }
std::optional<DeviceKind> parse_device_kind(std::string_view s) { return parse_enum(s, kKinds); }
std::optional<DeviceState> parse_device_state(std::string_view s) { return parse_enum(s, kStates); }
std::optional<Phase> parse_phase(std::string_view s) { return parse_enum(s, kPhases); }

// ---- schema ----------------------------------------------------------------

int Catalog::latest_schema_version() { return static_cast<int>(catalog_migrations().size()); }

Result<Catalog> Catalog::open(std::shared_ptr<Database> db) {
  Catalog catalog(std::move(db));
  if (auto r = catalog.migrate(); !r) return tl::unexpected(r.error());
  return catalog;
}

Result<Catalog> Catalog::open_read_only(std::shared_ptr<Database> db) {
  Catalog catalog(std::move(db));
  auto v = catalog.schema_version();
  if (!v) return tl::unexpected(v.error().context("open catalog read-only"));
  if (*v != latest_schema_version()) {
    return fail("open catalog read-only", catalog.db_->path(), 0,
                "schema version " + std::to_string(*v) + ", this build reads version " +
                    std::to_string(latest_schema_version()));
  }
  return catalog;
}

Result<int> Catalog::schema_version() {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
  if (!st) return tl::unexpected(st.error());
  auto row = st->step();
  if (!row) return tl::unexpected(row.error());
  return static_cast<int>(st->int64(0));
}

Status Catalog::migrate() {
  return in_transaction(*db_, [&]() -> Status {
    TRY(
        db_->exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
                  " version INTEGER PRIMARY KEY, applied_ns INTEGER NOT NULL)"));
    auto current = schema_version();
    if (!current) return tl::unexpected(current.error());
    const auto& migrations = catalog_migrations();
    if (*current > static_cast<int>(migrations.size())) {
      return fail("open catalog", db_->path(), 0,
                  "schema version " + std::to_string(*current) + " is newer than this agent (" +
                      std::to_string(migrations.size()) + "); run the newer stepsnapd");
    }
    for (int v = *current; v < static_cast<int>(migrations.size()); ++v) {
      if (auto r = db_->exec(std::string(migrations[v])); !r) {
        return tl::unexpected(
            Error(r.error()).context("migrate catalog to version " + std::to_string(v + 1)));
      }
      auto st = db_->prepare("INSERT INTO schema_migrations (version, applied_ns) VALUES (?, ?)");
      if (!st) return tl::unexpected(st.error());
      st->bind(1, std::int64_t{v + 1}).bind(2, now_ns());
      TRY(st->run());
    }
    return {};
  });
}

// ---- pools -----------------------------------------------------------------

Result<PoolRecord> Catalog::add_pool(const PoolSpec& spec) {
  return in_transaction(*db_, [&]() -> Result<PoolRecord> {
    auto existing = find_pool(spec.name);
    if (!existing) return tl::unexpected(existing.error());
    if (*existing) return fail("add pool", spec.name, EEXIST);
    auto st = db_->prepare(
        "INSERT INTO pools (name, data_device, metadata_device, block_bytes, created_ns) "
        "VALUES (?, ?, ?, ?, ?)");
    if (!st) return tl::unexpected(st.error());
    st->bind(1, spec.name)
        .bind(2, spec.data_device)
        .bind(3, spec.metadata_device)
        .bind(4, static_cast<std::int64_t>(spec.block_bytes))
        .bind(5, now_ns());
    TRY(st->run());
    return get_pool(db_->last_insert_rowid());
  });
}

Result<std::optional<PoolRecord>> Catalog::find_pool(const std::string& name) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(std::string("SELECT ") + kPoolColumns + " FROM pools WHERE name = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, name);
  auto row = st->step();
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<PoolRecord>();
  return std::optional<PoolRecord>(read_pool(*st));
}

Result<PoolRecord> Catalog::get_pool(std::int64_t id) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(std::string("SELECT ") + kPoolColumns + " FROM pools WHERE id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, id);
  auto row = st->step();
  if (!row) return tl::unexpected(row.error());
  if (!*row) return fail("find pool", "#" + std::to_string(id), ENOENT);
  return read_pool(*st);
}

// ---- devices ---------------------------------------------------------------

Result<Labels> Catalog::load_labels(std::int64_t device_id) {
  auto st = db_->prepare("SELECT key, value FROM labels WHERE device_id = ? ORDER BY key");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, device_id);
  Labels labels;
  for (;;) {
    auto row = st->step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return labels;
    labels.emplace(st->text(0), st->text(1));
  }
}

Result<std::optional<StepInfo>> Catalog::load_step(std::int64_t device_id) {
  auto st = db_->prepare(
      "SELECT pipeline, run, step, phase, command, exit_status FROM step_snapshots "
      "WHERE device_id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, device_id);
  auto row = st->step();
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<StepInfo>();
  StepInfo s;
  s.pipeline = st->text(0);
  s.run = st->text(1);
  s.step = st->text(2);
  s.phase = parse_phase(st->text(3)).value_or(Phase::pre);
  s.command = st->text(4);
  if (auto e = st->opt_int64(5)) s.exit_status = static_cast<int>(*e);
  return std::optional<StepInfo>(std::move(s));
}

Result<DeviceRecord> Catalog::fill(DeviceRecord record) {
  auto labels = load_labels(record.id);
  if (!labels) return tl::unexpected(labels.error());
  record.labels = std::move(*labels);
  auto step = load_step(record.id);
  if (!step) return tl::unexpected(step.error());
  record.step = std::move(*step);
  return record;
}

Result<std::optional<DeviceRecord>> Catalog::first_device(Statement& st) {
  auto row = st.step();
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<DeviceRecord>();
  auto d = fill(read_device(st));
  if (!d) return tl::unexpected(d.error());
  return std::optional<DeviceRecord>(std::move(*d));
}

Result<std::vector<DeviceRecord>> Catalog::all_devices(Statement& st) {
  std::vector<DeviceRecord> rows;
  for (;;) {
    auto row = st.step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) break;
    rows.push_back(read_device(st));
  }
  if (auto filled = fill_all(rows); !filled) return tl::unexpected(filled.error());
  return rows;
}

// A list of devices gets its labels and step records in two statements per
// chunk of ids, not two per device: statements, not rows, are what a read
// costs (a run of 100 steps was 400 of them, most of run.show's time under
// emulation, docs/benchmarks.md).
Status Catalog::fill_all(std::vector<DeviceRecord>& rows) {
  constexpr std::size_t kChunk = 500;  // bound ids per statement, far below SQLite's limit
  std::map<std::int64_t, DeviceRecord*> by_id;
  for (auto& d : rows) by_id[d.id] = &d;
  for (std::size_t start = 0; start < rows.size(); start += kChunk) {
    const std::size_t n = std::min(kChunk, rows.size() - start);
    std::string marks;
    for (std::size_t i = 0; i < n; ++i) marks += i ? ",?" : "?";
    auto labels = db_->prepare("SELECT device_id, key, value FROM labels WHERE device_id IN (" +
                               marks + ") ORDER BY device_id, key");
    auto steps = db_->prepare(
        "SELECT device_id, pipeline, run, step, phase, command, exit_status FROM step_snapshots "
        "WHERE device_id IN (" +
        marks + ")");
    if (!labels) return tl::unexpected(labels.error());
    if (!steps) return tl::unexpected(steps.error());
    for (std::size_t i = 0; i < n; ++i) {
      labels->bind(static_cast<int>(i + 1), rows[start + i].id);
      steps->bind(static_cast<int>(i + 1), rows[start + i].id);
    }
    for (;;) {
      auto row = labels->step();
      if (!row) return tl::unexpected(row.error());
      if (!*row) break;
      by_id[labels->int64(0)]->labels.emplace(labels->text(1), labels->text(2));
    }
    for (;;) {
      auto row = steps->step();
      if (!row) return tl::unexpected(row.error());
      if (!*row) break;
      StepInfo s;
      s.pipeline = steps->text(1);
      s.run = steps->text(2);
      s.step = steps->text(3);
      s.phase = parse_phase(steps->text(4)).value_or(Phase::pre);
      s.command = steps->text(5);
      if (auto e = steps->opt_int64(6)) s.exit_status = static_cast<int>(*e);
      by_id[steps->int64(0)]->step = std::move(s);
    }
  }
  return {};
}

Result<DeviceRecord> Catalog::get_device(std::int64_t id) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(std::string("SELECT ") + kDeviceColumns + " FROM devices WHERE id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, id);
  auto row = st->step();
  if (!row) return tl::unexpected(row.error());
  if (!*row) return fail("find device", "#" + std::to_string(id), ENOENT);
  return fill(read_device(*st));
}

std::string new_device_uuid() {
  std::array<unsigned char, 16> bytes{};
  std::size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    // getrandom only fails before the entropy pool is ready at early boot;
    // a uuid that collides is refused by the unique index, never merged.
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

Result<std::optional<DeviceRecord>> Catalog::find_device_by(std::int64_t pool_id,
                                                            const char* column,
                                                            const std::string& value) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(std::string("SELECT ") + kDeviceColumns +
                         " FROM devices WHERE pool_id = ? AND " + column + " = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, pool_id).bind(2, value);
  return first_device(*st);
}

Result<std::optional<DeviceRecord>> Catalog::find_device_by_uuid(std::int64_t pool_id,
                                                                 const std::string& uuid) {
  return find_device_by(pool_id, "uuid", uuid);
}

Result<std::optional<DeviceRecord>> Catalog::find_device(std::int64_t pool_id,
                                                         const std::string& name) {
  return find_device_by(pool_id, "name", name);
}

Result<std::vector<DeviceRecord>> Catalog::list_devices(const DeviceFilter& f) {
  std::lock_guard lock(db_->mutex());
  // A run's snapshots are found from step_snapshots (its index on pipeline,
  // run, step) and joined to devices by primary key; CROSS JOIN keeps SQLite
  // from walking every device in id order instead, which it may prefer for
  // the ORDER BY without statistics. Everything else starts from devices.
  const bool by_step = f.pipeline || f.run || f.step;
  std::string sql =
      "SELECT d.id, d.pool_id, d.name, d.kind, d.thin_id, d.origin_id, d.parent_id, "
      "d.state, d.dm_name, d.size_bytes, d.mapped_bytes, d.created_ns, d.fault, d.owner_uid, "
      "d.run_clone, d.uuid, d.received_from ";
  sql += by_step ? "FROM step_snapshots s CROSS JOIN devices d ON d.id = s.device_id WHERE 1"
                 : "FROM devices d WHERE 1";
  // Each optional filter is one "AND x = ?"; the binding order follows.
  std::vector<std::string> texts;
  std::vector<std::int64_t> ints;
  std::vector<std::pair<bool, std::size_t>> order;  // (is_text, index)
  auto add_int = [&](const char* clause, std::int64_t v) {
    sql += clause;
    order.emplace_back(false, ints.size());
    ints.push_back(v);
  };
  auto add_text = [&](const char* clause, std::string v) {
    sql += clause;
    order.emplace_back(true, texts.size());
    texts.push_back(std::move(v));
  };
  if (f.pool_id) add_int(" AND d.pool_id = ?", *f.pool_id);
  if (f.kind) add_text(" AND d.kind = ?", std::string(to_string(*f.kind)));
  if (!f.kinds.empty()) {
    sql += " AND d.kind IN (";
    for (std::size_t i = 0; i < f.kinds.size(); ++i) {
      add_text(i == 0 ? "?" : ", ?", std::string(to_string(f.kinds[i])));
    }
    sql += ")";
  }
  if (f.origin_id) add_int(" AND d.origin_id = ?", *f.origin_id);
  if (f.pipeline) add_text(" AND s.pipeline = ?", *f.pipeline);
  if (f.run) add_text(" AND s.run = ?", *f.run);
  if (f.step) add_text(" AND s.step = ?", *f.step);
  if (f.after_id) add_int(by_step ? " AND s.device_id > ?" : " AND d.id > ?", *f.after_id);
  sql += " ORDER BY d.id";
  if (f.limit) add_int(" LIMIT ?", static_cast<std::int64_t>(*f.limit));
  auto st = db_->prepare(sql);
  if (!st) return tl::unexpected(st.error());
  for (std::size_t i = 0; i < order.size(); ++i) {
    int index = static_cast<int>(i + 1);
    if (order[i].first)
      st->bind(index, texts[order[i].second]);
    else
      st->bind(index, ints[order[i].second]);
  }
  return all_devices(*st);
}

Result<std::optional<DeviceRecord>> Catalog::newest_snapshot(std::int64_t origin_id) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(std::string("SELECT ") + kDeviceColumns +
                         " FROM devices WHERE origin_id = ? AND kind = 'snapshot' AND state = "
                         "'created' ORDER BY id DESC LIMIT 1");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, origin_id);
  return first_device(*st);
}

Result<std::vector<std::string>> Catalog::lineage(std::int64_t device_id, std::size_t max) {
  std::lock_guard lock(db_->mutex());
  // Each hop is a primary-key lookup; the LIMIT also ends a cycle, which the
  // schema does not forbid.
  auto st = db_->prepare(
      "WITH RECURSIVE up(id, hops) AS ("
      " SELECT parent_id, 1 FROM devices WHERE id = ?1 AND parent_id IS NOT NULL"
      " UNION ALL SELECT d.parent_id, up.hops + 1 FROM up JOIN devices d ON d.id = up.id"
      " WHERE d.parent_id IS NOT NULL AND up.hops < ?2)"
      " SELECT d.name FROM up JOIN devices d ON d.id = up.id ORDER BY up.hops LIMIT ?2");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, device_id).bind(2, static_cast<std::int64_t>(max));
  std::vector<std::string> names;
  for (;;) {
    auto row = st->step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) break;
    names.push_back(st->text(0));
  }
  return names;
}

Result<std::optional<DeviceRecord>> Catalog::find_run_clone(std::int64_t pool_id,
                                                            const RunCloneKey& key) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(std::string("SELECT ") + kDeviceColumns +
                         " FROM devices WHERE pool_id = ? AND run_clone = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, pool_id).bind(2, key.text());
  return first_device(*st);
}

Result<std::vector<DeviceRecord>> Catalog::list_run_clones(const std::string& pipeline,
                                                           const std::string& run) {
  std::lock_guard lock(db_->mutex());
  // run_clone is "<pipeline>/<run>/<volume>" and names never hold '/': the
  // run's clones are the range ["p/r/", "p/r0") of the run_clone index ('0'
  // follows '/'), not a scan of every clone.
  auto st = db_->prepare(std::string("SELECT ") + kDeviceColumns +
                         " FROM devices WHERE run_clone >= ? AND run_clone < ? ORDER BY id");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, pipeline + "/" + run + "/").bind(2, pipeline + "/" + run + "0");
  return all_devices(*st);
}

Result<bool> Catalog::run_exists(std::int64_t pool_id, const std::string& pipeline,
                                 const std::string& run) {
  std::lock_guard lock(db_->mutex());
  // The run's clones are the run_clone index range ["p/r/", "p/r0"), as in
  // list_run_clones: a search, not a test of every device of the pool.
  auto st = db_->prepare(
      "SELECT EXISTS (SELECT 1 FROM devices WHERE run_clone >= ?2 AND run_clone < ?5 "
      "AND pool_id = ?1) "
      "OR EXISTS (SELECT 1 FROM step_snapshots s JOIN devices d ON d.id = s.device_id "
      "WHERE d.pool_id = ?1 AND s.pipeline = ?3 AND s.run = ?4) "
      "OR EXISTS (SELECT 1 FROM steps WHERE pipeline = ?3 AND run = ?4) "
      "OR EXISTS (SELECT 1 FROM run_plans WHERE pipeline = ?3 AND run = ?4)");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, pool_id)
      .bind(2, pipeline + "/" + run + "/")
      .bind(3, pipeline)
      .bind(4, run)
      .bind(5, pipeline + "/" + run + "0");
  auto row = st->step();
  if (!row) return tl::unexpected(row.error());
  return st->int64(0) != 0;
}

Result<Intent> Catalog::begin_create(const CreateSpec& spec) {
  return in_transaction(*db_, [&]() -> Result<Intent> {
    auto pool = get_pool(spec.pool_id);
    if (!pool) return tl::unexpected(pool.error());
    auto taken = find_device(spec.pool_id, spec.name);
    if (!taken) return tl::unexpected(taken.error());
    if (*taken) {
      return fail("create " + std::string(to_string(spec.kind)), spec.name, EEXIST,
                  "a " + std::string(to_string((*taken)->kind)) + " of that name exists in pool " +
                      pool->name + "; pick another name");
    }
    if (spec.run_clone) {
      auto other = find_run_clone(spec.pool_id, *spec.run_clone);
      if (!other) return tl::unexpected(other.error());
      if (*other) {
        return fail("create run clone", spec.run_clone->text(), EEXIST,
                    "the run already has its clone of that volume, " + (*other)->name);
      }
    }
    Intent intent;
    std::uint64_t size = spec.size_bytes;
    std::optional<std::int64_t> parent;
    const bool received = !spec.received_from.empty();
    if (received && (spec.kind != DeviceKind::snapshot || spec.origin_id)) {
      return fail("receive snapshot", spec.name, EINVAL,
                  "a received device is a snapshot with no origin on this pool");
    }
    if (received) parent = spec.parent_id;
    if (spec.kind != DeviceKind::volume && !spec.origin_id && !received) {
      return fail("create " + std::string(to_string(spec.kind)), spec.name, EINVAL,
                  "a snapshot or clone needs an origin");
    }
    if (spec.origin_id) {
      auto origin = get_device(*spec.origin_id);
      if (!origin) return tl::unexpected(origin.error().context("create " + spec.name));
      if (origin->pool_id != spec.pool_id) {
        return fail("create " + spec.name, origin->name, EXDEV, "origin is in another pool");
      }
      const bool origin_usable =
          origin->state == DeviceState::created ||
          (spec.origin_in_same_operation && origin->state == DeviceState::creating);
      if (!origin_usable) {
        return fail(
            "create " + spec.name, origin->name, EBUSY,
            "origin is " + std::string(to_string(origin->state)) + "; wait for it or delete it");
      }
      // Snapshots are taken of writable devices; clones and restored volumes
      // are made from snapshots. Anything else breaks the lineage model.
      bool origin_is_snapshot = origin->kind == DeviceKind::snapshot;
      if ((spec.kind == DeviceKind::snapshot) == origin_is_snapshot) {
        return fail(
            "create " + std::string(to_string(spec.kind)), spec.name, EINVAL,
            spec.kind == DeviceKind::snapshot
                ? "snapshots are taken of volumes or clones, not of snapshot " + origin->name
                : "clones and restores are made from snapshots, not from " +
                      std::string(to_string(origin->kind)) + " " + origin->name);
      }
      if (size == 0) size = origin->size_bytes;
      intent.origin_thin_id = origin->thin_id;
      if (spec.kind == DeviceKind::snapshot) {
        auto st = db_->prepare(
            "SELECT id FROM devices WHERE origin_id = ? AND kind = 'snapshot' "
            "AND state = 'created' ORDER BY id DESC LIMIT 1");
        if (!st) return tl::unexpected(st.error());
        st->bind(1, *spec.origin_id);
        auto row = st->step();
        if (!row) return tl::unexpected(row.error());
        if (*row) parent = st->int64(0);
      }
    }
    if (size == 0) {
      return fail("create volume", spec.name, EINVAL, "size must be more than 0 bytes");
    }
    if (pool->next_thin_id > kMaxThinId) {
      return fail("create " + spec.name, "pool " + pool->name, ENOSPC,
                  "all 2^24 thin ids have been used (ids are never reused); make a new pool");
    }
    intent.thin_id = pool->next_thin_id;
    if (spec.thin_id) {
      // Ids only grow: one below the counter was handed out before.
      if (*spec.thin_id < pool->next_thin_id || *spec.thin_id > kMaxThinId) {
        return fail("create " + spec.name, "thin id " + std::to_string(*spec.thin_id), EINVAL,
                    "pool " + pool->name + " has given out every id below " +
                        std::to_string(pool->next_thin_id) + " already; ids are never reused");
      }
      intent.thin_id = *spec.thin_id;
    }
    std::int64_t now = now_ns();

    auto bump = db_->prepare("UPDATE pools SET next_thin_id = ? WHERE id = ?");
    if (!bump) return tl::unexpected(bump.error());
    bump->bind(1, std::int64_t{intent.thin_id} + 1).bind(2, spec.pool_id);
    TRY(bump->run());

    auto ins = db_->prepare(
        "INSERT INTO devices (pool_id, name, kind, thin_id, origin_id, parent_id, state, "
        "size_bytes, created_ns, owner_uid, run_clone, dm_name, uuid, received_from) "
        "VALUES (?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?)");
    if (!ins) return tl::unexpected(ins.error());
    ins->bind(1, spec.pool_id)
        .bind(2, spec.name)
        .bind(3, std::string(to_string(spec.kind)))
        .bind(4, std::int64_t{intent.thin_id})
        .bind(5, spec.origin_id)
        .bind(6, parent)
        .bind(7, static_cast<std::int64_t>(size))
        .bind(8, now)
        .bind(9, std::int64_t{spec.owner_uid})
        .bind(10, spec.run_clone ? std::optional<std::string>(spec.run_clone->text())
                                 : std::optional<std::string>())
        .bind(11, spec.dm_name)
        .bind(12, spec.uuid.value_or(new_device_uuid()))
        .bind(13, received ? std::optional<std::string>(spec.received_from)
                           : std::optional<std::string>());
    TRY(ins->run());
    intent.device_id = db_->last_insert_rowid();

    TRY(set_labels(intent.device_id, spec.labels));
    if (spec.step) {
      auto st = db_->prepare(
          "INSERT INTO step_snapshots (device_id, pipeline, run, step, phase, command, "
          "exit_status) VALUES (?, ?, ?, ?, ?, ?, ?)");
      if (!st) return tl::unexpected(st.error());
      std::optional<std::int64_t> exit_status;
      if (spec.step->exit_status) exit_status = *spec.step->exit_status;
      st->bind(1, intent.device_id)
          .bind(2, spec.step->pipeline)
          .bind(3, spec.step->run)
          .bind(4, spec.step->step)
          .bind(5, std::string(to_string(spec.step->phase)))
          .bind(6, spec.step->command)
          .bind(7, exit_status);
      TRY(st->run());
    }

    auto op = db_->prepare(
        "INSERT INTO operations (pool_id, kind, device_id, device_name, thin_id, state, "
        "started_ns) VALUES (?, 'create', ?, ?, ?, 'pending', ?)");
    if (!op) return tl::unexpected(op.error());
    op->bind(1, spec.pool_id)
        .bind(2, intent.device_id)
        .bind(3, spec.name)
        .bind(4, std::int64_t{intent.thin_id})
        .bind(5, now);
    TRY(op->run());
    intent.operation_id = db_->last_insert_rowid();
    return intent;
  });
}

Status Catalog::set_operation(std::int64_t operation_id, OperationState state,
                              const std::string& detail) {
  auto st =
      db_->prepare("UPDATE operations SET state = ?, finished_ns = ?, detail = ? WHERE id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, std::string(to_string(state)))
      .bind(2, now_ns())
      .bind(3, detail)
      .bind(4, operation_id);
  TRY(st->run());
  if (db_->changes() != 1)
    return fail("close operation", "#" + std::to_string(operation_id), ENOENT);
  return {};
}

Status Catalog::finish_create(const Intent& intent, const std::string& dm_name,
                              std::uint64_t mapped_bytes) {
  return in_transaction(*db_, [&]() -> Status {
    auto st = db_->prepare(
        "UPDATE devices SET state = 'created', dm_name = ?, mapped_bytes = ? "
        "WHERE id = ? AND state = 'creating'");
    if (!st) return tl::unexpected(st.error());
    st->bind(1, dm_name).bind(2, static_cast<std::int64_t>(mapped_bytes)).bind(3, intent.device_id);
    TRY(st->run());
    if (db_->changes() != 1) {
      return fail("finish create", "device #" + std::to_string(intent.device_id), ENOENT,
                  "no device in state creating");
    }
    return set_operation(intent.operation_id, OperationState::done, "");
  });
}

Status Catalog::abort_create(const Intent& intent, const Error& why, bool device_exists) {
  return in_transaction(*db_, [&]() -> Status {
    if (device_exists) {
      TRY(mark_faulty(intent.device_id, "create failed: " + why.message()));
    } else {
      TRY(drop_device(intent.device_id));
    }
    return set_operation(intent.operation_id, OperationState::failed, why.message());
  });
}

Result<Intent> Catalog::begin_delete(std::int64_t device_id) {
  return in_transaction(*db_, [&]() -> Result<Intent> {
    auto d = get_device(device_id);
    if (!d) return tl::unexpected(d.error().context("delete"));
    if (d->state == DeviceState::creating || d->state == DeviceState::deleting) {
      return fail("delete", d->name, EBUSY,
                  "it is " + std::string(to_string(d->state)) + "; try again when that finishes");
    }
    auto st = db_->prepare("UPDATE devices SET state = 'deleting' WHERE id = ?");
    if (!st) return tl::unexpected(st.error());
    st->bind(1, device_id);
    TRY(st->run());
    auto op = db_->prepare(
        "INSERT INTO operations (pool_id, kind, device_id, device_name, thin_id, state, "
        "started_ns) VALUES (?, 'remove', ?, ?, ?, 'pending', ?)");
    if (!op) return tl::unexpected(op.error());
    op->bind(1, d->pool_id)
        .bind(2, device_id)
        .bind(3, d->name)
        .bind(4, std::int64_t{d->thin_id})
        .bind(5, now_ns());
    TRY(op->run());
    Intent intent;
    intent.operation_id = db_->last_insert_rowid();
    intent.device_id = device_id;
    intent.thin_id = d->thin_id;
    return intent;
  });
}

Status Catalog::finish_delete(const Intent& intent) {
  return in_transaction(*db_, [&]() -> Status {
    TRY(drop_device(intent.device_id));
    return set_operation(intent.operation_id, OperationState::done, "");
  });
}

Status Catalog::abort_delete(const Intent& intent, const Error& why, bool device_exists) {
  return in_transaction(*db_, [&]() -> Status {
    if (device_exists) {
      TRY(mark_created(intent.device_id));
    } else {
      TRY(drop_device(intent.device_id));
    }
    return set_operation(intent.operation_id, OperationState::failed, why.message());
  });
}

Status Catalog::set_mapped_bytes(std::int64_t device_id, std::uint64_t bytes) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare("UPDATE devices SET mapped_bytes = ? WHERE id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, static_cast<std::int64_t>(bytes)).bind(2, device_id);
  TRY(st->run());
  if (db_->changes() != 1)
    return fail("set mapped bytes", "device #" + std::to_string(device_id), ENOENT);
  return {};
}

Status Catalog::set_dm_name(std::int64_t device_id, const std::string& dm_name) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare("UPDATE devices SET dm_name = ? WHERE id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, dm_name).bind(2, device_id);
  TRY(st->run());
  if (db_->changes() != 1)
    return fail("set dm name", "device #" + std::to_string(device_id), ENOENT);
  return {};
}

Status Catalog::set_labels(std::int64_t device_id, const Labels& labels) {
  return in_transaction(*db_, [&]() -> Status {
    auto del = db_->prepare("DELETE FROM labels WHERE device_id = ?");
    if (!del) return tl::unexpected(del.error());
    del->bind(1, device_id);
    TRY(del->run());
    for (const auto& [key, value] : labels) {
      auto ins = db_->prepare("INSERT INTO labels (device_id, key, value) VALUES (?, ?, ?)");
      if (!ins) return tl::unexpected(ins.error());
      ins->bind(1, device_id).bind(2, key).bind(3, value);
      TRY(ins->run());
    }
    return {};
  });
}

// ---- recovery --------------------------------------------------------------

Result<std::vector<OperationRecord>> Catalog::pending_operations(std::int64_t pool_id) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(
      "SELECT id, pool_id, kind, device_id, device_name, thin_id, state, started_ns, "
      "finished_ns, detail FROM operations WHERE pool_id = ? AND state = 'pending' ORDER BY id");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, pool_id);
  std::vector<OperationRecord> out;
  for (;;) {
    auto row = st->step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return out;
    OperationRecord op;
    op.id = st->int64(0);
    op.pool_id = st->int64(1);
    op.kind = parse_enum(st->text(2), kOpKinds).value_or(OperationKind::create);
    op.device_id = st->opt_int64(3);
    op.device_name = st->text(4);
    op.thin_id = static_cast<std::uint32_t>(st->int64(5));
    op.state = parse_enum(st->text(6), kOpStates).value_or(OperationState::pending);
    op.started_ns = st->int64(7);
    op.finished_ns = st->opt_int64(8);
    op.detail = st->text(9);
    out.push_back(std::move(op));
  }
}

Status Catalog::close_operation(std::int64_t operation_id, OperationState state,
                                const std::string& detail) {
  std::lock_guard lock(db_->mutex());
  return set_operation(operation_id, state, detail);
}

Status Catalog::mark_faulty(std::int64_t device_id, const std::string& reason) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare("UPDATE devices SET state = 'faulty', fault = ? WHERE id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, reason).bind(2, device_id);
  TRY(st->run());
  if (db_->changes() != 1)
    return fail("mark faulty", "device #" + std::to_string(device_id), ENOENT);
  return {};
}

Status Catalog::mark_created(std::int64_t device_id) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare("UPDATE devices SET state = 'created', fault = '' WHERE id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, device_id);
  TRY(st->run());
  if (db_->changes() != 1)
    return fail("mark created", "device #" + std::to_string(device_id), ENOENT);
  return {};
}

Status Catalog::drop_device(std::int64_t device_id) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare("DELETE FROM devices WHERE id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, device_id);
  TRY(st->run());
  if (db_->changes() != 1) return fail("drop device", "#" + std::to_string(device_id), ENOENT);
  return {};
}

Status Catalog::advance_thin_id(std::int64_t pool_id, std::uint32_t next) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare("UPDATE pools SET next_thin_id = MAX(next_thin_id, ?) WHERE id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, std::int64_t{next}).bind(2, pool_id);
  TRY(st->run());
  if (db_->changes() != 1)
    return fail("advance thin id", "pool #" + std::to_string(pool_id), ENOENT);
  return {};
}

Status Catalog::set_transaction_id(std::int64_t pool_id, std::uint64_t txn) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare("UPDATE pools SET transaction_id = ? WHERE id = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, static_cast<std::int64_t>(txn)).bind(2, pool_id);
  TRY(st->run());
  if (db_->changes() != 1)
    return fail("record transaction id", "pool #" + std::to_string(pool_id), ENOENT);
  return {};
}

// ---- steps -----------------------------------------------------------------

Status Catalog::save_step(const StepRecord& r) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(std::string("INSERT INTO steps (") + kStepColumns +
                         ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (pipeline, run, step) DO UPDATE SET "
                         "cgroup = excluded.cgroup, cgroup_id = excluded.cgroup_id, "
                         "policy = excluded.policy, volumes = excluded.volumes, "
                         "command = excluded.command, labels = excluded.labels, "
                         "state = excluded.state, exit_status = excluded.exit_status, "
                         "error = excluded.error, registered_ns = excluded.registered_ns, "
                         "started_ns = excluded.started_ns, finished_ns = excluded.finished_ns, "
                         "held_ns = excluded.held_ns, pre_snapshots = excluded.pre_snapshots, "
                         "post_snapshots = excluded.post_snapshots");
  if (!st) return tl::unexpected(st.error());
  auto opt = [](std::int64_t v) { return v ? std::optional<std::int64_t>(v) : std::nullopt; };
  std::optional<std::int64_t> exit_status;
  if (r.exit_status) exit_status = *r.exit_status;
  st->bind(1, r.pipeline)
      .bind(2, r.run)
      .bind(3, r.step)
      .bind(4, r.cgroup)
      .bind(5, static_cast<std::int64_t>(r.cgroup_id))
      .bind(6, r.policy)
      .bind(7, nlohmann::json(r.volumes).dump())
      .bind(8, r.command)
      .bind(9, nlohmann::json(r.labels).dump())
      .bind(10, r.state)
      .bind(11, exit_status)
      .bind(12, r.error)
      .bind(13, r.registered_ns)
      .bind(14, opt(r.started_ns))
      .bind(15, opt(r.finished_ns))
      .bind(16, r.held_ns)
      .bind(17, nlohmann::json(r.pre_snapshots).dump())
      .bind(18, nlohmann::json(r.post_snapshots).dump());
  if (auto run = st->run(); !run) {
    return tl::unexpected(
        Error(run.error()).context("save step " + r.pipeline + "/" + r.run + "/" + r.step));
  }
  return {};
}

Result<std::vector<StepRecord>> Catalog::query_steps(const std::string& where,
                                                     const std::vector<std::string>& args) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(std::string("SELECT ") + kStepColumns + " FROM steps WHERE " + where +
                         " ORDER BY pipeline, run, step");
  if (!st) return tl::unexpected(st.error());
  for (std::size_t i = 0; i < args.size(); ++i) st->bind(static_cast<int>(i + 1), args[i]);
  std::vector<StepRecord> out;
  for (;;) {
    auto row = st->step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return out;
    out.push_back(read_step(*st));
  }
}

Result<std::optional<StepRecord>> Catalog::find_step(const std::string& pipeline,
                                                     const std::string& run,
                                                     const std::string& step) {
  auto rows = query_steps("pipeline = ? AND run = ? AND step = ?", {pipeline, run, step});
  if (!rows) return tl::unexpected(rows.error());
  if (rows->empty()) return std::optional<StepRecord>();
  return std::optional<StepRecord>(std::move(rows->front()));
}

Result<std::vector<StepRecord>> Catalog::list_steps(const std::string& pipeline,
                                                    const std::string& run) {
  return query_steps("pipeline = ? AND run = ?", {pipeline, run});
}

namespace {

// Every (pipeline, run) with the earliest time recorded for it: a step's
// registration, a step snapshot's creation, a plan's creation.
constexpr const char* kRunTimes =
    "SELECT pipeline, run, registered_ns AS t FROM steps"
    " UNION ALL SELECT s.pipeline, s.run, d.created_ns FROM step_snapshots s"
    " JOIN devices d ON d.id = s.device_id"
    " UNION ALL SELECT pipeline, run, created_ns FROM run_plans";

}  // namespace

Result<std::vector<RunKey>> Catalog::list_runs(const RunFilter& f) {
  std::lock_guard lock(db_->mutex());
  // Keyset paging in list order (first time descending, then names): the
  // runs after `after` are the ones that sort after it, whatever was added
  // or removed elsewhere in the list since.
  std::string sql =
      std::string("SELECT pipeline, run, MIN(t) FROM (") + kRunTimes + ") GROUP BY pipeline, run";
  if (f.after)
    sql +=
        " HAVING MIN(t) < ?1 OR (MIN(t) = ?1 AND (pipeline > ?2 OR (pipeline = ?2 AND run > ?3)))";
  sql += " ORDER BY MIN(t) DESC, pipeline, run";
  if (f.limit) sql += " LIMIT ?4";
  auto st = db_->prepare(sql);
  if (!st) return tl::unexpected(st.error());
  if (f.after) st->bind(1, f.after->first_ns).bind(2, f.after->pipeline).bind(3, f.after->run);
  if (f.limit) st->bind(4, static_cast<std::int64_t>(*f.limit));
  std::vector<RunKey> out;
  for (;;) {
    auto r = st->step();
    if (!r) return tl::unexpected(r.error());
    if (!*r) break;
    out.push_back({st->text(0), st->text(1), st->int64(2)});
  }
  return out;
}

Result<std::optional<RunKey>> Catalog::find_run_key(const std::string& pipeline,
                                                    const std::string& run) {
  std::lock_guard lock(db_->mutex());
  // The same times as list_runs, each part through its index on (pipeline,
  // run).
  auto st = db_->prepare(
      "SELECT MIN(t) FROM ("
      " SELECT registered_ns AS t FROM steps WHERE pipeline = ?1 AND run = ?2"
      " UNION ALL SELECT d.created_ns FROM step_snapshots s JOIN devices d ON d.id = s.device_id"
      " WHERE s.pipeline = ?1 AND s.run = ?2"
      " UNION ALL SELECT created_ns FROM run_plans WHERE pipeline = ?1 AND run = ?2)");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, pipeline).bind(2, run);
  auto row = st->step();
  if (!row) return tl::unexpected(row.error());
  if (!*row || st->is_null(0)) return std::optional<RunKey>();
  return std::optional<RunKey>(RunKey{pipeline, run, st->int64(0)});
}

Result<std::map<std::int64_t, std::string>> Catalog::device_names(
    const std::vector<std::int64_t>& ids) {
  std::lock_guard lock(db_->mutex());
  std::map<std::int64_t, std::string> names;
  constexpr std::size_t kChunk = 500;
  for (std::size_t start = 0; start < ids.size(); start += kChunk) {
    const std::size_t n = std::min(kChunk, ids.size() - start);
    std::string marks;
    for (std::size_t i = 0; i < n; ++i) marks += i ? ",?" : "?";
    auto st = db_->prepare("SELECT id, name FROM devices WHERE id IN (" + marks + ")");
    if (!st) return tl::unexpected(st.error());
    for (std::size_t i = 0; i < n; ++i) st->bind(static_cast<int>(i + 1), ids[start + i]);
    for (;;) {
      auto row = st->step();
      if (!row) return tl::unexpected(row.error());
      if (!*row) break;
      names[st->int64(0)] = st->text(1);
    }
  }
  return names;
}

Result<std::vector<StepRecord>> Catalog::unfinished_steps() {
  return query_steps("state NOT IN ('finished', 'failed')", {});
}

}  // namespace stepsnap::agent
