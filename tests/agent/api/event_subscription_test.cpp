// events.subscribe on a real event log: a follower that pruning overtakes
// gets events.truncated with the first seq still kept, not a silent end.
#include "agent/api/event_subscription.h"

#include <gtest/gtest.h>

#include "agent/catalog/catalog.h"
#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;

// Records what a subscriber would receive; on_send runs after each event
// (here: the log races ahead of a slow reader).
class RecordingStream : public EventStream {
 public:
  bool accept(const json& result) override {
    accepted = result;
    return true;
  }
  bool send_events(const std::vector<std::string_view>& events) override {
    for (std::string_view text : events) {
      lines.emplace_back(text);
      seqs.push_back(json::parse(text)["seq"].get<std::uint64_t>());
      if (on_send) on_send();
    }
    return true;
  }
  bool stopping() const override { return stop; }

  json accepted;
  std::vector<std::string> lines;  // each event's text as sent
  std::vector<std::uint64_t> seqs;
  std::function<void()> on_send;
  bool stop = false;
};

class EventSubscription : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::open_db(dir_.file("catalog.db"));
    ASSERT_TRUE(Catalog::open(db_));
    auto e = EventLog::open(db_, {.retain = 5});
    ASSERT_TRUE(e) << e.error().message();
    events_ = std::move(*e);
  }
  void append(int n) {
    for (int i = 0; i < n; ++i) ASSERT_TRUE(events_->append(EventType::error, {{"i", i}}));
  }
  testing::TempDir dir_;
  std::shared_ptr<Database> db_;
  std::unique_ptr<EventLog> events_;
};

TEST_F(EventSubscription, AFollowerOvertakenByPruningGetsTruncatedWithTheOldestSeq) {
  append(3);
  RecordingStream stream;
  // Each event delivered lets 20 more be committed: with 5 kept, what the
  // reader was to get next is pruned before it asks.
  stream.on_send = [&] {
    if (stream.seqs.size() == 1) append(20);
  };
  auto r = stream_events(*events_, {.since = 0, .follow = true}, stream);
  ASSERT_FALSE(r) << "the stream ended without saying events were lost";
  EXPECT_EQ(r.error().code, "events.truncated");
  EXPECT_EQ(stream.accepted["last_seq"], 3);
  ASSERT_FALSE(stream.seqs.empty());
  const std::uint64_t oldest = r.error().details["oldest_seq"].get<std::uint64_t>();
  EXPECT_EQ(oldest, 19u) << "23 events, the newest 5 kept";
  EXPECT_GT(oldest, stream.seqs.back() + 1) << "there really is a gap";
  EXPECT_NE(r.error().message.find("resubscribe with since=18"), std::string::npos)
      << r.error().message;
}

TEST_F(EventSubscription, ResumingBeforeTheOldestKeptIsTruncatedUpFront) {
  append(12);
  RecordingStream stream;
  auto r = stream_events(*events_, {.since = 2, .follow = false}, stream);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "events.truncated");
  EXPECT_EQ(r.error().details["oldest_seq"], 8);
  EXPECT_TRUE(stream.accepted.is_null()) << "nothing was accepted before the error";
}

// The spliced page against the path it replaced (each stored line parsed,
// its event rebuilt, each response line written by event_response): the
// same bytes, escaping included.
TEST(EventSubscriptionLines, TheResponseLinesAreTheBytesTheParsedPathWrote) {
  testing::TempDir dir;
  auto db = testing::open_db(dir.file("catalog.db"));
  ASSERT_TRUE(Catalog::open(db));
  auto events = EventLog::open(db).value();
  json data = {{"quote", "say \"hi\"\\ back\\slash"},
               {"control", std::string("tab\tnl\n") + '\0' + "\x01\x1f"},
               {"unicode", "caf\u00e9 \u65e5\u672c \U0001F600 \u2028"},
               {"numbers", {0, -1, 18446744073709551615ULL, 0.1, -2.5e-300}},
               {"nested", {{"a", {{"b", nullptr}}}, {"t", true}}}};
  ASSERT_TRUE(events->append(EventType::snapshot_created, data));
  ASSERT_TRUE(events->append(EventType::step_finished, {{"exit_status", 0}}));
  RecordingStream stream;
  ASSERT_TRUE(stream_events(*events, {.since = 0, .follow = false}, stream));
  auto parsed = events->read_since(0).value();
  ASSERT_EQ(stream.lines.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const json event = parsed.events[i].to_json();
    for (const json& id : {json(7), json("req-\"\u00e9\"")}) {
      EXPECT_EQ(protocol::event_line_response(id, stream.lines[i]),
                protocol::event_response(id, event))
          << "event " << i << " id " << id.dump();
    }
  }
}

// since and limit keep their meaning across the log's pages of 1000: each
// event once, in order, exactly the ones asked for.
TEST(EventSubscriptionLines, SinceAndLimitAcrossPages) {
  testing::TempDir dir;
  auto db = testing::open_db(dir.file("catalog.db"));
  ASSERT_TRUE(Catalog::open(db));
  auto events = EventLog::open(db).value();
  {
    auto sp = Savepoint::begin(*db);  // one commit for all of them
    ASSERT_TRUE(sp);
    for (int i = 0; i < 2500; ++i) ASSERT_TRUE(events->append(EventType::error, {{"i", i}}));
    ASSERT_TRUE(sp->commit());
  }
  auto range = [](std::uint64_t from, std::uint64_t to) {
    std::vector<std::uint64_t> v;
    for (auto s = from; s <= to; ++s) v.push_back(s);
    return v;
  };
  {
    RecordingStream stream;
    ASSERT_TRUE(stream_events(*events, {.since = 5, .follow = false, .limit = 1100}, stream));
    EXPECT_EQ(stream.seqs, range(6, 1105));
    EXPECT_EQ(stream.accepted["last_seq"], 2500);
  }
  {
    RecordingStream stream;
    ASSERT_TRUE(stream_events(*events, {.since = 0, .follow = false}, stream));
    EXPECT_EQ(stream.seqs, range(1, 2500));
  }
  {
    RecordingStream stream;
    ASSERT_TRUE(stream_events(*events, {.since = 2499, .follow = false, .limit = 5}, stream));
    EXPECT_EQ(stream.seqs, range(2500, 2500));
  }
}

TEST_F(EventSubscription, AReaderThatKeepsUpGetsEveryEventInOrder) {
  append(4);
  RecordingStream stream;
  auto r = stream_events(*events_, {.since = 0, .follow = false}, stream);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(stream.seqs, (std::vector<std::uint64_t>{1, 2, 3, 4}));
}

}  // namespace
}  // namespace stepsnap::agent
