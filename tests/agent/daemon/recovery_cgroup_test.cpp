// Start-up kills of steps left before their pre-snapshot (recovery.h), on
// real cgroups (label host, root): the kill reaches the recorded cgroup
// only if the path still leads beneath the step subtree to the same inode.
#include <gtest/gtest.h>

#include "agent/catalog/catalog.h"
#include "agent/daemon/recovery.h"
#include "agent/events/event_log.h"
#include "tests/agent/policy/cgroup_test_support.h"
#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

class RecoveryKills : public testing::CgroupTest {
 protected:
  void SetUp() override {
    testing::CgroupTest::SetUp();
    if (IsSkipped()) return;
    db_ = testing::open_db(dir_.file("catalog.db"));
    auto c = Catalog::open(db_);
    ASSERT_TRUE(c) << c.error().message();
    catalog_.emplace(std::move(*c));
    auto e = EventLog::open(db_);
    ASSERT_TRUE(e) << e.error().message();
    events_ = std::move(*e);
  }
  // A step recorded as registered (before its pre-snapshot) on `cgroup`.
  void record(const std::string& name, const std::string& cgroup, std::uint64_t id) {
    StepRecord r;
    r.pipeline = "p";
    r.run = "r";
    r.step = name;
    r.cgroup = cgroup;
    r.cgroup_id = id;
    r.policy = "both";
    r.volumes = {"ws"};
    r.state = "registered";
    r.registered_ns = 1;
    ASSERT_TRUE(catalog_->save_step(r));
  }
  nlohmann::json event_of(const std::string& step) {
    auto b = events_->read_since(0);
    for (const auto& e : b->events)
      if (e.data.value("step", "") == step) return e.data;
    return nullptr;
  }

  testing::TempDir dir_;
  std::shared_ptr<Database> db_;
  std::optional<Catalog> catalog_;
  std::unique_ptr<EventLog> events_;
};

TEST_F(RecoveryKills, OnlyTheRecordedCgroupIsKilled) {
  // s-same: the cgroup registered, still there with its process.
  auto& same = make("p/r/same");
  pid_t same_pid = sleeper(same);
  record("s-same", same.path(), same.id());
  // s-again: the registered cgroup was removed and made again at the same
  // path; what runs there now is not the step.
  std::uint64_t old_id = 0;
  {
    auto& gone = make("p/r/again");
    old_id = gone.id();
    ASSERT_TRUE(gone.remove());
  }
  auto& again = make("p/r/again");
  ASSERT_NE(again.id(), old_id);
  pid_t again_pid = sleeper(again);
  record("s-again", again.path(), old_id);
  // s-outside: a record naming a cgroup outside the step subtree (what an
  // older agent accepted from any group member).
  auto outside = runner::Cgroup::create(outside_name_ + "/victim");
  ASSERT_TRUE(outside) << outside.error().message();
  pid_t outside_pid = sleeper(*outside);
  record("s-outside", outside->path(), outside->id());

  auto r = fail_interrupted_steps(*catalog_, *events_, subtree_);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->repairs, 3);

  EXPECT_TRUE(killed(same_pid));
  EXPECT_EQ(event_of("s-same").value("killed", false), true);

  EXPECT_FALSE(killed(again_pid)) << "a cgroup made again at the path was killed";
  auto e = event_of("s-again");
  EXPECT_EQ(e.value("killed", true), false) << e.dump();
  EXPECT_NE(e.value("not_killed", "").find("inode"), std::string::npos) << e.dump();

  EXPECT_FALSE(killed(outside_pid)) << "a cgroup outside the subtree was killed";
  e = event_of("s-outside");
  EXPECT_EQ(e.value("killed", true), false) << e.dump();
  EXPECT_NE(e.value("not_killed", "").find("must be beneath"), std::string::npos) << e.dump();
}

}  // namespace
}  // namespace stepsnap::agent
