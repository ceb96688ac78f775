// Start-up handling of steps that were under way when the previous daemon
// stopped (recovery.h, fail_interrupted_steps), on a real catalog file. The
// cgroups named here do not exist, so nothing is killed: what is tested is
// what the catalog and the event stream say.
#include <gtest/gtest.h>

#include "agent/catalog/catalog.h"
#include "agent/daemon/recovery.h"
#include "agent/events/event_log.h"
#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

using testing::open_db;
using testing::TempDir;

StepRecord step(const std::string& name, const std::string& state) {
  StepRecord r;
  r.pipeline = "p";
  r.run = "r";
  r.step = name;
  r.cgroup = "/nonexistent/stepsnap-test/" + name;
  r.policy = "both";
  r.volumes = {"ws"};
  r.state = state;
  r.registered_ns = 1;
  return r;
}

class RecoverySteps : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = open_db(dir_.file("catalog.db"));
    auto c = Catalog::open(db_);
    ASSERT_TRUE(c) << c.error().message();
    catalog_.emplace(std::move(*c));
    auto e = EventLog::open(db_);
    ASSERT_TRUE(e) << e.error().message();
    events_ = std::move(*e);
  }

  std::vector<Event> all_events() {
    auto b = events_->read_since(0);
    EXPECT_TRUE(b);
    return b ? b->events : std::vector<Event>{};
  }

  TempDir dir_;
  std::shared_ptr<Database> db_;
  std::optional<Catalog> catalog_;
  std::unique_ptr<EventLog> events_;
};

TEST_F(RecoverySteps, EveryNonTerminalStepIsFailedWithOneEventNamingItsState) {
  for (const char* state : {"registered", "holding", "running", "finishing"}) {
    ASSERT_TRUE(catalog_->save_step(step(std::string("s-") + state, state)));
  }
  StepRecord done = step("s-finished", "finished");
  done.exit_status = 0;
  ASSERT_TRUE(catalog_->save_step(done));
  ASSERT_TRUE(catalog_->save_step(step("s-failed", "failed")));

  auto r = fail_interrupted_steps(*catalog_, *events_, "/nonexistent/stepsnap-test");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->repairs, 4);
  EXPECT_EQ(r->failures, 0);

  for (const char* state : {"registered", "holding", "running", "finishing"}) {
    auto s = catalog_->find_step("p", "r", std::string("s-") + state);
    ASSERT_TRUE(s && *s);
    EXPECT_EQ((*s)->state, "failed");
    std::string why = std::string("stepsnapd restarted while the step was ") + state;
    // Both policy: a step past its start has no post-snapshot, and says so.
    if (std::string(state) == "running" || std::string(state) == "finishing")
      why += "; its post-snapshot is missing (no pinned watch told when it ended)";
    EXPECT_EQ((*s)->error, why);
    EXPECT_GT((*s)->finished_ns, 0);
  }
  auto finished = *catalog_->find_step("p", "r", "s-finished");
  EXPECT_EQ(finished->state, "finished") << "a finished step is history, not touched";
  EXPECT_EQ(finished->exit_status, 0);

  auto events = all_events();
  ASSERT_EQ(events.size(), 4u);
  for (const auto& e : events) {
    EXPECT_EQ(e.type, EventType::agent_recovered);
    EXPECT_EQ(e.data.value("action", ""), "fail_step");
    EXPECT_TRUE(e.data.value("ok", false));
    std::string was = e.data.value("was", "");
    EXPECT_EQ(e.data.value("step", ""), "s-" + was);
    EXPECT_EQ(e.data.value("reason", "").rfind("stepsnapd restarted while the step was " + was, 0),
              0u);
  }
  // Steps before their pre-snapshot would run without one: their cgroups are
  // killed; here the cgroups are gone, and the event says nothing was killed.
  // A running step is left to run: its event has no "killed".
  for (const auto& e : events) {
    std::string was = e.data.value("was", "");
    if (was == "registered" || was == "holding") {
      EXPECT_FALSE(e.data.value("killed", true)) << e.data.dump();
    } else {
      EXPECT_FALSE(e.data.contains("killed")) << e.data.dump();
    }
  }

  // A second start finds nothing left to do.
  auto again = fail_interrupted_steps(*catalog_, *events_, "/nonexistent/stepsnap-test");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->repairs, 0);
  EXPECT_EQ(all_events().size(), 4u);
}

// Steps the policy took over through their pinned watch are its own: not
// failed, no event.
TEST_F(RecoverySteps, StepsTheTracerAdoptedAreLeftAsTheyAre) {
  ASSERT_TRUE(catalog_->save_step(step("s-adopted", "running")));
  ASSERT_TRUE(catalog_->save_step(step("s-lost", "running")));
  auto r =
      fail_interrupted_steps(*catalog_, *events_, "/nonexistent/stepsnap-test", {"p/r/s-adopted"});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->repairs, 1);
  EXPECT_EQ((*catalog_->find_step("p", "r", "s-adopted"))->state, "running");
  EXPECT_EQ((*catalog_->find_step("p", "r", "s-lost"))->state, "failed");
  EXPECT_EQ(all_events().size(), 1u);
}

}  // namespace
}  // namespace stepsnap::agent
