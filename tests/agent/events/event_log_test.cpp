#include "agent/events/event_log.h"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "agent/catalog/catalog.h"
#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

using namespace std::chrono_literals;
using testing::open_db;
using testing::TempDir;

class EventLogTest : public ::testing::Test {
 protected:
  std::unique_ptr<EventLog> open(EventLogOptions options = {}) {
    db_ = open_db(dir_.file("catalog.db"));
    auto catalog = Catalog::open(db_);  // creates the events tables
    EXPECT_TRUE(catalog) << catalog.error().message();
    auto log = EventLog::open(db_, std::move(options));
    EXPECT_TRUE(log) << log.error().message();
    return log ? std::move(*log) : nullptr;
  }

  TempDir dir_;
  std::shared_ptr<Database> db_;
};

TEST(EventFormat, Rfc3339WithNanoseconds) {
  EXPECT_EQ(format_rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
  EXPECT_EQ(format_rfc3339_ns(1714564800123456789LL), "2024-05-01T12:00:00.123456789Z");
  EXPECT_EQ(format_rfc3339_ns(-1), "1969-12-31T23:59:59.999999999Z");
}

TEST(EventFormat, EveryTypeRoundTrips) {
  for (auto t : {EventType::step_started, EventType::step_finished, EventType::snapshot_created,
                 EventType::snapshot_deleted, EventType::clone_created, EventType::volume_created,
                 EventType::volume_deleted, EventType::pool_low_space, EventType::pool_out_of_space,
                 EventType::agent_recovered, EventType::error, EventType::events_lost}) {
    EXPECT_EQ(parse_event_type(to_string(t)), t) << to_string(t);
  }
  EXPECT_FALSE(parse_event_type("nope"));
}

TEST(EventFormat, LineHasVersionSeqTypeTimeData) {
  Event e{7, EventType::snapshot_created, 0, {{"name", "ws-pre"}, {"pause_us", 812}}};
  auto j = nlohmann::json::parse(e.line());
  EXPECT_EQ(j["version"], kEventSchemaVersion);
  EXPECT_EQ(j["seq"], 7);
  EXPECT_EQ(j["type"], "snapshot.created");
  EXPECT_EQ(j["time"], "1970-01-01T00:00:00.000000000Z");
  EXPECT_EQ(j["data"]["pause_us"], 812);
  EXPECT_EQ(e.line().find('\n'), std::string::npos);
}

// The data a line must carry through untouched: quotes, backslashes,
// control characters, non-ASCII text, numbers of every kind, nesting.
nlohmann::json awkward_data() {
  return {{"quote", "say \"hi\"\\ back\\slash"},
          {"control", std::string("tab\tnl\ncr\rnul") + '\0' + "\x01\x1f end"},
          {"unicode", "caf\u00e9 \u65e5\u672c \U0001F600 \u2028"},
          {"numbers", {0, -1, 9007199254740993LL, 18446744073709551615ULL, 0.1, -2.5e-300, 1e300}},
          {"nested", {{"a", {{"b", nullptr}}}, {"t", true}, {"empty", nlohmann::json::object()}}},
          {"slash", "a/b</script>"}};
}

TEST_F(EventLogTest, StoredLinesAreReadBackAsTheParsedReadWritesThem) {
  auto log = open();
  ASSERT_TRUE(log->append(EventType::snapshot_created, awkward_data()));
  ASSERT_TRUE(log->append(EventType::step_started, {{"step", "a"}, {"held_ns", 123}}));
  ASSERT_TRUE(log->append(EventType::error, nlohmann::json::object()));
  ASSERT_TRUE(log->append(EventType::pool_usage, {{"data_percent", 12.345678901234567}}));
  auto parsed = log->read_since(0);
  auto lines = log->read_lines_since(0);
  ASSERT_TRUE(parsed && lines);
  ASSERT_EQ(lines->events.size(), 4u);
  ASSERT_EQ(parsed->events.size(), 4u);
  EXPECT_EQ(lines->last_seq, parsed->last_seq);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(lines->events[i].seq, parsed->events[i].seq);
    EXPECT_EQ(lines->events[i].type, parsed->events[i].type);
    EXPECT_EQ(lines->events[i].text, parsed->events[i].line()) << "event " << i;
  }
  // And every line append() wrote is taken as it is, not rebuilt: its frame
  // matches its row.
  auto st = db_->prepare("SELECT seq, type, time_ns, body FROM events ORDER BY seq");
  ASSERT_TRUE(st);
  int rows = 0;
  while (*st->step()) {
    ++rows;
    auto type = parse_event_type(st->text(1));
    ASSERT_TRUE(type);
    EXPECT_TRUE(is_canonical_line(st->text(3), static_cast<std::uint64_t>(st->int64(0)), *type,
                                  st->int64(2)))
        << st->text(3);
  }
  EXPECT_EQ(rows, 4);
}

TEST_F(EventLogTest, LinesNotWrittenByAppendAreRebuiltAsTheParsedReadDoes) {
  auto log = open();
  ASSERT_TRUE(log->append(EventType::step_started, {{"step", "a"}}));
  // Rows another writer could have left: keys in another order, a time that
  // is not the row's, a body that does not parse, a type this build does not
  // know, data that is not an object.
  const char* bodies[][2] = {
      {"snapshot.created",
       R"({"version":1,"seq":2,"type":"snapshot.created","time":"1970-01-01T00:00:00.000000000Z","data":{"b":1,"a":"x"}})"},
      {"snapshot.created",
       R"({"data":{"a":1},"seq":3,"time":"2000-01-01T00:00:00.000000000Z","type":"snapshot.created","version":1})"},
      {"error", "not json at all"},
      {"future.type",
       R"({"data":{"a":1},"seq":5,"time":"1970-01-01T00:00:00.000000042Z","type":"future.type","version":1})"},
      {"error",
       R"({"data":[1,2],"seq":6,"time":"1970-01-01T00:00:00.000000042Z","type":"error","version":1})"},
  };
  std::int64_t seq = 1;
  for (const auto& [type, body] : bodies) {
    auto ins = db_->prepare("INSERT INTO events (seq, type, time_ns, body) VALUES (?, ?, 42, ?)");
    ASSERT_TRUE(ins);
    ASSERT_TRUE(ins->bind(1, ++seq).bind(2, type).bind(3, body).run());
  }
  ASSERT_TRUE(db_->prepare("UPDATE event_seq SET last = ?")->bind(1, seq).run());
  log = EventLog::open(db_).value();  // sees the new last seq
  auto parsed = log->read_since(0);
  auto lines = log->read_lines_since(0);
  ASSERT_TRUE(parsed && lines);
  ASSERT_EQ(lines->events.size(), 6u);
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(lines->events[i].text, parsed->events[i].line()) << "event " << i;
    EXPECT_EQ(lines->events[i].type, parsed->events[i].type);
  }
  // The last one's data was an array and is kept as the parsed read keeps it.
  EXPECT_EQ(
      lines->events[5].text,
      R"({"data":[1,2],"seq":6,"time":"1970-01-01T00:00:00.000000042Z","type":"error","version":1})");
}

TEST_F(EventLogTest, SeqStrictlyIncreasesAcrossRestarts) {
  {
    auto log = open();
    EXPECT_EQ(*log->append(EventType::step_started, {{"step", "a"}}), 1u);
    EXPECT_EQ(*log->append(EventType::step_finished, {{"exit_status", 0}}), 2u);
  }
  auto log = open();
  EXPECT_EQ(log->last_seq(), 2u);
  EXPECT_EQ(*log->append(EventType::agent_recovered), 3u);
  auto batch = log->read_since(0);
  ASSERT_TRUE(batch);
  ASSERT_EQ(batch->events.size(), 3u);
  EXPECT_EQ(batch->events[0].type, EventType::step_started);
  EXPECT_EQ(batch->events[0].data["step"], "a");
  EXPECT_EQ(batch->events[2].seq, 3u);
}

TEST_F(EventLogTest, ResumeFromSinceMissesNothing) {
  auto log = open();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(log->append(EventType::snapshot_created, {{"i", i}}));
  auto batch = log->read_since(6);
  ASSERT_TRUE(batch);
  ASSERT_EQ(batch->events.size(), 4u);
  EXPECT_EQ(batch->events.front().seq, 7u);
  EXPECT_EQ(batch->events.back().seq, 10u);
  EXPECT_FALSE(batch->truncated);
  EXPECT_TRUE(log->read_since(10)->events.empty());
  auto limited = log->read_since(0, 3);
  EXPECT_EQ(limited->events.size(), 3u);
}

TEST_F(EventLogTest, SinceBelowRetentionIsTruncatedNeverSilent) {
  auto log = open({.retain = 5});
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(log->append(EventType::clone_created));
  auto old = log->read_since(3);
  ASSERT_TRUE(old);
  EXPECT_TRUE(old->truncated);
  EXPECT_TRUE(old->events.empty());
  EXPECT_EQ(old->oldest_available, 8u);
  // Exactly at the edge of the window: fine.
  auto edge = log->read_since(7);
  EXPECT_FALSE(edge->truncated);
  EXPECT_EQ(edge->events.size(), 5u);
}

TEST_F(EventLogTest, SinceAheadOfTheLogIsAnError) {
  auto log = open();
  ASSERT_TRUE(log->append(EventType::error));
  auto ahead = log->read_since(50);
  ASSERT_FALSE(ahead);
  EXPECT_EQ(ahead.error().err, EINVAL);
}

TEST_F(EventLogTest, EventCommitsWithTheCallersTransactionOrNotAtAll) {
  auto log = open();
  {
    auto sp = Savepoint::begin(*db_);
    ASSERT_TRUE(sp);
    ASSERT_TRUE(log->append(EventType::volume_created));
    EXPECT_EQ(log->last_seq(), 0u);  // not visible before commit
    // rolled back
  }
  EXPECT_EQ(log->last_seq(), 0u);
  EXPECT_TRUE(log->read_since(0)->events.empty());
  {
    auto sp = Savepoint::begin(*db_);
    auto seq = log->append(EventType::volume_created);
    ASSERT_TRUE(seq);
    EXPECT_EQ(*seq, 1u);  // the rolled-back seq was never published, so reused
    ASSERT_TRUE(sp->commit());
  }
  EXPECT_EQ(log->last_seq(), 1u);
}

TEST_F(EventLogTest, LastSeqOfATypeCountsOnlyItsCommittedEvents) {
  auto log = open();
  EXPECT_EQ(log->last_seq_of(EventType::pool_low_space), 0u);
  ASSERT_TRUE(log->append(EventType::volume_created));
  ASSERT_TRUE(log->append(EventType::pool_low_space, {{"used_percent", 81}}));
  ASSERT_TRUE(log->append(EventType::volume_created));
  {
    auto sp = Savepoint::begin(*db_);
    ASSERT_TRUE(log->append(EventType::pool_low_space, {{"used_percent", 90}}));
    // rolled back: never published, so not counted
  }
  EXPECT_EQ(log->last_seq_of(EventType::pool_low_space), 2u);
  EXPECT_EQ(log->last_seq_of(EventType::volume_created), 3u);
  EXPECT_EQ(log->last_seq_of(EventType::snapshot_created), 0u);
}

TEST_F(EventLogTest, FollowerIsWokenByACommit) {
  auto log = open();
  std::uint64_t seen = 0;
  std::thread follower([&] { seen = log->wait_for(0, 5s); });
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(log->append(EventType::pool_low_space, {{"used_percent", 81}}));
  follower.join();
  EXPECT_EQ(seen, 1u);
}

TEST_F(EventLogTest, CloseWakesFollowers) {
  auto log = open();
  auto start = std::chrono::steady_clock::now();
  std::thread follower([&] { log->wait_for(0, 10s); });
  std::this_thread::sleep_for(20ms);
  log->close();
  follower.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_TRUE(log->closed());
}

TEST_F(EventLogTest, AlsoAppendsLinesToAFile) {
  std::string path = dir_.file("events.jsonl");
  auto log = open({.file_path = path});
  ASSERT_TRUE(log->append(EventType::step_started, {{"step", "s"}}));
  ASSERT_TRUE(log->append(EventType::events_lost, {{"count", 3}}));
  std::ifstream in(path);
  std::string line;
  std::vector<nlohmann::json> lines;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1]["type"], "events.lost");
  EXPECT_EQ(lines[1]["seq"], 2);
}

TEST_F(EventLogTest, UnwritableFileIsANamedError) {
  db_ = open_db(dir_.file("catalog.db"));
  ASSERT_TRUE(Catalog::open(db_));
  auto log = EventLog::open(db_, {.file_path = dir_.file("no/such/dir/events.jsonl")});
  ASSERT_FALSE(log);
  EXPECT_NE(log.error().message().find("events.jsonl"), std::string::npos);
}

}  // namespace
}  // namespace stepsnap::agent
