#include "agent/events/event_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>

#include "common/enum_names.h"
#include "common/log.h"
#include "common/time.h"

namespace stepsnap::agent {

namespace {

constexpr std::pair<EventType, std::string_view> kTypes[] = {
    {EventType::step_started, "step.started"},
    {EventType::step_finished, "step.finished"},
    {EventType::snapshot_created, "snapshot.created"},
    {EventType::snapshot_deleted, "snapshot.deleted"},
    {EventType::snapshot_labelled, "snapshot.labelled"},
    {EventType::clone_created, "clone.created"},
    {EventType::volume_created, "volume.created"},
    {EventType::volume_deleted, "volume.deleted"},
    {EventType::pool_low_space, "pool.low_space"},
    {EventType::pool_out_of_space, "pool.out_of_space"},
    {EventType::pool_usage, "pool.usage"},
    {EventType::agent_recovered, "agent.recovered"},
    {EventType::error, "error"},
    {EventType::events_lost, "events.lost"},
    {EventType::retention_deleted, "retention.deleted"},
    {EventType::retention_swept, "retention.swept"},
};

Status run(Statement& st) { return st.run(); }

}  // namespace

std::string_view to_string(EventType type) { return name_of(type, kTypes, "error"); }

std::vector<std::string_view> event_type_names() {
  std::vector<std::string_view> names;
  for (const auto& [type, name] : kTypes) names.push_back(name);
  return names;
}

std::optional<EventType> parse_event_type(std::string_view text) {
  return parse_enum(text, kTypes);
}

nlohmann::json Event::to_json() const {
  return nlohmann::json{{"version", kEventSchemaVersion},
                        {"seq", seq},
                        {"type", std::string(to_string(type))},
                        {"time", format_rfc3339_ns(time_ns)},
                        {"data", data}};
}

bool is_canonical_line(std::string_view body, std::uint64_t seq, EventType type,
                       std::int64_t time_ns) {
  constexpr std::string_view head = "{\"data\":";
  std::string tail = ",\"seq\":" + std::to_string(seq) + ",\"time\":\"" +
                     format_rfc3339_ns(time_ns) + "\",\"type\":\"" + std::string(to_string(type)) +
                     "\",\"version\":" + std::to_string(kEventSchemaVersion) + "}";
  return body.size() > head.size() + tail.size() && body.starts_with(head) && body.ends_with(tail);
}

Result<std::unique_ptr<EventLog>> EventLog::open(std::shared_ptr<Database> db,
                                                 EventLogOptions options) {
  if (options.retain == 0) {
    return fail("open event log", "retention", EINVAL, "keep at least one event");
  }
  std::unique_ptr<EventLog> log(new EventLog(std::move(db), std::move(options)));
  {
    std::lock_guard lock(log->db_->mutex());
    auto st = log->db_->prepare("SELECT last FROM event_seq WHERE one = 1");
    if (!st) return tl::unexpected(st.error().context("open event log"));
    auto row = st->step();
    if (!row) return tl::unexpected(row.error().context("open event log"));
    if (!*row) return fail("open event log", log->db_->path(), 0, "event_seq row missing");
    log->committed_ = static_cast<std::uint64_t>(st->int64(0));
  }
  if (!log->options_.file_path.empty()) {
    int fd = ::open(log->options_.file_path.c_str(),
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) {
      return fail_errno("open event log file", log->options_.file_path);
    }
    log->file_.reset(fd);
  }
  return log;
}

EventLog::~EventLog() { close(); }

Result<std::uint64_t> EventLog::append(EventType type, nlohmann::json data) {
  if (!data.is_object()) data = nlohmann::json{{"value", std::move(data)}};
  auto sp = Savepoint::begin(*db_);
  if (!sp) return tl::unexpected(sp.error().context("append event"));

  auto next = db_->prepare("UPDATE event_seq SET last = last + 1 WHERE one = 1 RETURNING last");
  if (!next) return tl::unexpected(next.error());
  auto row = next->step();
  if (!row) return tl::unexpected(row.error().context("append event"));
  Event event;
  event.seq = static_cast<std::uint64_t>(next->int64(0));
  if (auto r = next->run(); !r) return tl::unexpected(r.error());
  event.type = type;
  event.time_ns = now_ns();
  event.data = std::move(data);
  std::string line = event.line();

  auto ins = db_->prepare("INSERT INTO events (seq, type, time_ns, body) VALUES (?, ?, ?, ?)");
  if (!ins) return tl::unexpected(ins.error());
  ins->bind(1, static_cast<std::int64_t>(event.seq))
      .bind(2, std::string(to_string(type)))
      .bind(3, event.time_ns)
      .bind(4, line);
  if (auto r = run(*ins); !r) return tl::unexpected(r.error().context("append event"));

  if (event.seq > options_.retain) {
    auto prune = db_->prepare("DELETE FROM events WHERE seq <= ?");
    if (!prune) return tl::unexpected(prune.error());
    prune->bind(1, static_cast<std::int64_t>(event.seq - options_.retain));
    if (auto r = run(*prune); !r) return tl::unexpected(r.error().context("prune events"));
  }

  std::uint64_t seq = event.seq;
  db_->after_commit([this, seq, type, line = std::move(line)] { published(seq, type, line); });
  if (auto c = sp->commit(); !c) return tl::unexpected(c.error().context("append event"));
  return seq;
}

void EventLog::published(std::uint64_t seq, EventType type, const std::string& line) {
  if (file_) {
    std::string out = line + "\n";
    // O_APPEND and one write() per line: concurrent readers (tail -f) never
    // see half a line from us.
    ssize_t n = ::write(file_.get(), out.data(), out.size());
    if (n != static_cast<ssize_t>(out.size()) && !file_warned_) {
      file_warned_ = true;
      log::warn("event log file " + options_.file_path +
                ": write failed; events stay in the catalog (further failures not logged)");
    }
  }
  {
    std::lock_guard lock(mutex_);
    if (seq > committed_) committed_ = seq;
    auto& of_type = committed_by_type_[type];
    if (seq > of_type) of_type = seq;
  }
  changed_.notify_all();
}

namespace {

// One row of a `SELECT seq, type, time_ns, body FROM events ...`, parsed.
Event event_row(const Statement& st) {
  Event e;
  e.seq = static_cast<std::uint64_t>(st.int64(0));
  e.type = parse_event_type(st.text(1)).value_or(EventType::error);
  e.time_ns = st.int64(2);
  auto body = nlohmann::json::parse(st.text(3), nullptr, /*allow_exceptions=*/false);
  if (body.is_object() && body.contains("data")) e.data = body["data"];
  return e;
}

// The same row as its line: the stored text itself when it is what
// event_row(...).line() would give, else exactly that, rebuilt.
EventLine line_row(const Statement& st) {
  EventLine l;
  l.seq = static_cast<std::uint64_t>(st.int64(0));
  l.type = parse_event_type(st.text(1)).value_or(EventType::error);
  l.text = st.text(3);
  if (!is_canonical_line(l.text, l.seq, l.type, st.int64(2))) l.text = event_row(st).line();
  return l;
}

// Every row of a `SELECT seq, type, time_ns, body FROM events ...`.
template <typename E, typename Row>
Result<std::vector<E>> read_rows(Statement& st, Row row) {
  std::vector<E> out;
  for (;;) {
    auto r = st.step();
    if (!r) return tl::unexpected(r.error());
    if (!*r) return out;
    out.push_back(row(st));
  }
}

// The events after `since` up to batch.last_seq (which the caller read), at
// most `max`; truncated when pruning went past `since`. db's mutex is held.
template <typename E, typename Row>
Result<EventPage<E>> read_upto(Database& db, std::uint64_t since, std::size_t max,
                               EventPage<E> batch, Row row) {
  if (since > batch.last_seq) {
    return fail("read events", "since " + std::to_string(since), EINVAL,
                "the newest event is " + std::to_string(batch.last_seq) +
                    "; the position comes from another log; start again with since=0");
  }
  auto oldest = db.prepare("SELECT MIN(seq) FROM events");
  if (!oldest) return tl::unexpected(oldest.error());
  auto first = oldest->step();
  if (!first) return tl::unexpected(first.error());
  batch.oldest_available =
      oldest->is_null(0) ? batch.last_seq + 1 : static_cast<std::uint64_t>(oldest->int64(0));
  if (since + 1 < batch.oldest_available) {
    batch.truncated = true;
    return batch;
  }
  auto st = db.prepare(
      "SELECT seq, type, time_ns, body FROM events WHERE seq > ? AND seq <= ? ORDER BY seq "
      "LIMIT ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, static_cast<std::int64_t>(since))
      .bind(2, static_cast<std::int64_t>(batch.last_seq))
      .bind(3, static_cast<std::int64_t>(max));
  auto rows = read_rows<E>(*st, row);
  if (!rows) return tl::unexpected(rows.error());
  batch.events = std::move(*rows);
  return batch;
}

}  // namespace

Result<EventBatch> EventLog::read_since(std::uint64_t since, std::size_t max) {
  EventBatch batch;
  batch.last_seq = last_seq();
  std::lock_guard lock(db_->mutex());
  return read_upto(*db_, since, max, std::move(batch), event_row);
}

Result<EventLineBatch> EventLog::read_lines_since(std::uint64_t since, std::size_t max) {
  EventLineBatch batch;
  batch.last_seq = last_seq();
  std::lock_guard lock(db_->mutex());
  return read_upto(*db_, since, max, std::move(batch), line_row);
}

Result<EventBatch> read_committed_events(Database& db, std::uint64_t since, std::size_t max) {
  std::lock_guard lock(db.mutex());
  // One read transaction: the seq row and the rows it covers are one
  // snapshot of the WAL, so nothing committed in between is half-seen.
  if (auto b = db.exec("BEGIN"); !b) return tl::unexpected(b.error());
  struct EndRead {
    Database& db;
    ~EndRead() { (void)db.exec("COMMIT"); }
  } end_read{db};
  auto last = db.prepare("SELECT last FROM event_seq WHERE one = 1");
  if (!last) return tl::unexpected(last.error());
  auto row = last->step();
  if (!row) return tl::unexpected(row.error());
  EventBatch batch;
  batch.last_seq = *row ? static_cast<std::uint64_t>(last->int64(0)) : 0;
  return read_upto(db, since, max, std::move(batch), event_row);
}

Result<std::vector<Event>> read_latest_events(Database& db, const std::vector<EventType>& types,
                                              std::size_t max) {
  std::string in;
  for (std::size_t i = 0; i < types.size(); ++i) in += i ? ", ?" : "?";
  std::lock_guard lock(db.mutex());
  // Newest first through the (type, seq) index, so the read costs `max`
  // rows however long the log is.
  auto st = db.prepare("SELECT seq, type, time_ns, body FROM events WHERE type IN (" + in +
                       ") ORDER BY seq DESC LIMIT ?");
  if (!st) return tl::unexpected(st.error());
  int k = 1;
  for (EventType t : types) st->bind(k++, std::string(to_string(t)));
  st->bind(k, static_cast<std::int64_t>(max));
  auto rows = read_rows<Event>(*st, event_row);
  if (rows) std::reverse(rows->begin(), rows->end());
  return rows;
}

std::uint64_t EventLog::last_seq() const {
  std::lock_guard lock(mutex_);
  return committed_;
}

std::uint64_t EventLog::last_seq_of(EventType type) const {
  std::lock_guard lock(mutex_);
  auto it = committed_by_type_.find(type);
  return it == committed_by_type_.end() ? 0 : it->second;
}

std::uint64_t EventLog::wait_for(std::uint64_t since, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return closed_ || committed_ > since; });
  return committed_;
}

void EventLog::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  changed_.notify_all();
}

bool EventLog::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

}  // namespace stepsnap::agent
