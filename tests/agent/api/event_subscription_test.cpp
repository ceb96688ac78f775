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
  bool send(const json& event) override {
    seqs.push_back(event["seq"].get<std::uint64_t>());
    if (on_send) on_send();
    return true;
  }
  bool stopping() const override { return stop; }

  json accepted;
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

TEST_F(EventSubscription, AReaderThatKeepsUpGetsEveryEventInOrder) {
  append(4);
  RecordingStream stream;
  auto r = stream_events(*events_, {.since = 0, .follow = false}, stream);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(stream.seqs, (std::vector<std::uint64_t>{1, 2, 3, 4}));
}

}  // namespace
}  // namespace stepsnap::agent
