// agent/events/: the sequenced, resumable event log. Uses agent/catalog
// (its database).
//
// The event log: every state change as one JSON object with a strictly
// increasing sequence number, persisted in the catalog's database.
//
// Line format (schema version 1, see docs/api.md):
//   {"version":1,"seq":42,"type":"snapshot.created",
//    "time":"2024-05-01T12:00:00.123456789Z","data":{...}}
//
// Durability: append() writes inside the caller's transaction when one is
// open, so a catalog change and its event commit together. Subscribers are
// woken (and the optional file line written) only after the commit, so nobody
// ever sees an event that was rolled back.
//
// Retention: the newest `retain` events are kept (default 100000); older ones
// are pruned as new ones arrive. Sequence numbers are never reused, even after
// pruning or a restart. A reader asking for events after a seq that has been
// pruned gets `truncated` with the oldest seq still available: never a silent
// gap.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agent/catalog/sqlite_db.h"
#include "common/error.h"
#include "common/time.h"
#include "common/unique_fd.h"

namespace stepsnap::agent {

inline constexpr int kEventSchemaVersion = 1;

enum class EventType {
  step_started,
  step_finished,
  snapshot_created,
  snapshot_deleted,
  snapshot_labelled,
  clone_created,
  volume_created,
  volume_deleted,
  pool_low_space,
  pool_out_of_space,
  pool_usage,  // the pool's use moved (agent/volumes check_space)
  agent_recovered,
  error,
  events_lost,        // a producer (the BPF ring buffer) dropped records: data.count
  retention_deleted,  // the retention sweep deleted one device of a run
  retention_swept,    // a retention sweep ended (agent/retention)
};

std::string_view to_string(EventType type);
std::optional<EventType> parse_event_type(std::string_view text);
// Every type's name, in declaration order (the view's live page listens for each).
std::vector<std::string_view> event_type_names();

struct Event {
  std::uint64_t seq = 0;
  EventType type = EventType::error;
  std::int64_t time_ns = 0;
  nlohmann::json data = nlohmann::json::object();

  nlohmann::json to_json() const;
  // One line of the stream, without the trailing newline.
  std::string line() const { return to_json().dump(); }
};

struct EventLogOptions {
  std::uint64_t retain = 100000;
  // When set, every committed event is also appended to this file as one line.
  // Best effort: the database is the record; a failed write is logged.
  std::string file_path;
};

// One event as the log stored it: its line, not parsed. What a reader that
// only passes events on (events.subscribe) needs: the line already is the
// JSON the protocol sends, and parsing then writing it again cost about 1 ms
// an event in the emulated guest (docs/benchmarks.md, scale).
struct EventLine {
  std::uint64_t seq = 0;
  EventType type = EventType::error;
  // Exactly what Event::line() gives for the event read_since would return:
  // the stored text when its frame matches the row's own columns (it does
  // for every line append() wrote), else rebuilt from the row as read_since
  // would (a body written by hand or by another version).
  std::string text;
};

// The events after `since` (Event or EventLine), and where the log stands.
template <typename E>
struct EventPage {
  std::vector<E> events;
  bool truncated = false;  // events after `since` were pruned
  std::uint64_t oldest_available = 0;
  std::uint64_t last_seq = 0;  // newest committed seq
};
using EventBatch = EventPage<Event>;
using EventLineBatch = EventPage<EventLine>;

// Whether `body` is exactly the line Event::line() writes for an event with
// this seq, type and time: `{"data":` then anything, then
// `,"seq":N,"time":"T","type":"X","version":1}` (nlohmann's sorted keys).
// The middle is not checked: only append() writes this table.
bool is_canonical_line(std::string_view body, std::uint64_t seq, EventType type,
                       std::int64_t time_ns);

// The same read as EventLog::read_since, through any connection to the
// catalog: the view (agent/view) reads through its own read-only one. The
// newest committed seq is the event_seq row as that connection sees it, so
// a reader never waits on the writer's mutex. since ahead of the log: EINVAL.
Result<EventBatch> read_committed_events(Database& db, std::uint64_t since, std::size_t max = 1000);

// The newest `max` events of the given types, oldest first (the view's pool
// chart and space events), through any connection to the catalog.
Result<std::vector<Event>> read_latest_events(Database& db, const std::vector<EventType>& types,
                                              std::size_t max);

class EventLog {
 public:
  static Result<std::unique_ptr<EventLog>> open(std::shared_ptr<Database> db,
                                                EventLogOptions options = {});
  ~EventLog();

  // Assigns the next seq and stores the event. Returns the seq.
  Result<std::uint64_t> append(EventType type, nlohmann::json data = nlohmann::json::object());

  // Committed events with seq > since, oldest first, at most max. since ahead
  // of the log is an error (EINVAL): the client's position is from another
  // log, and pretending otherwise would hide a gap.
  Result<EventBatch> read_since(std::uint64_t since, std::size_t max = 1000);
  // The same events as their stored lines, not parsed (EventLine).
  Result<EventLineBatch> read_lines_since(std::uint64_t since, std::size_t max = 1000);

  std::uint64_t last_seq() const;
  // The newest committed seq of one type since open(), 0 if none: a
  // watcher of one rare type (retention's pool.low_space) compares it with
  // what it saw instead of reading every event.
  std::uint64_t last_seq_of(EventType type) const;
  // Blocks until an event after `since` is committed, the timeout passes, or
  // close() is called. Returns last_seq().
  std::uint64_t wait_for(std::uint64_t since, std::chrono::milliseconds timeout);
  // Wakes every waiter for good (daemon shutdown).
  void close();
  bool closed() const;

 private:
  EventLog(std::shared_ptr<Database> db, EventLogOptions options)
      : db_(std::move(db)), options_(std::move(options)) {}
  void published(std::uint64_t seq, EventType type, const std::string& line);

  std::shared_ptr<Database> db_;
  EventLogOptions options_;
  UniqueFd file_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::uint64_t committed_ = 0;
  std::unordered_map<EventType, std::uint64_t> committed_by_type_;
  bool closed_ = false;
  bool file_warned_ = false;
};

}  // namespace stepsnap::agent
