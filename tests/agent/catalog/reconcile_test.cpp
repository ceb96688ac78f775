#include "agent/catalog/reconcile.h"

#include <gtest/gtest.h>

namespace stepsnap::agent {
namespace {

using K = RepairAction::Kind;

DeviceRow dev(std::int64_t id, std::uint32_t thin, DeviceState state, std::string dm_name = {}) {
  DeviceRow d;
  d.id = id;
  d.name = "d" + std::to_string(id);
  d.thin_id = thin;
  d.state = state;
  d.dm_name = std::move(dm_name);
  return d;
}

OperationRecord op(std::int64_t id, OperationKind kind, std::optional<std::int64_t> device,
                   std::uint32_t thin) {
  OperationRecord o;
  o.id = id;
  o.pool_id = 1;
  o.kind = kind;
  o.device_id = device;
  o.device_name = device ? "d" + std::to_string(*device) : "gone";
  o.thin_id = thin;
  return o;
}

std::vector<K> kinds(const std::vector<RepairAction>& plan) {
  std::vector<K> out;
  for (const auto& a : plan) out.push_back(a.kind);
  return out;
}

TEST(Reconcile, ConsistentStateNeedsNoRepair) {
  ReconcileInput in;
  in.next_thin_id = 3;
  in.devices = {dev(1, 1, DeviceState::created), dev(2, 2, DeviceState::created)};
  in.pool_thin_ids = {1, 2};
  EXPECT_TRUE(plan_reconcile(in).empty());
}

TEST(Reconcile, EmptyPoolAndEmptyCatalogNeedNoRepair) {
  EXPECT_TRUE(plan_reconcile(ReconcileInput{}).empty());
}

TEST(Reconcile, CreatingAndPresentIsRolledBack) {
  ReconcileInput in;
  in.next_thin_id = 6;
  in.devices = {dev(5, 5, DeviceState::creating, "stepsnap-5")};
  in.pending = {op(9, OperationKind::create, 5, 5)};
  in.pool_thin_ids = {5};
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan), (std::vector<K>{K::delete_thin, K::drop_record, K::close_operation}));
  EXPECT_EQ(plan[0].thin_id, 5u);
  EXPECT_EQ(plan[0].dm_name, "stepsnap-5");  // deactivate before the pool message
  EXPECT_EQ(plan[1].device_id, 5);
  EXPECT_EQ(plan[2].operation_id, 9);
  EXPECT_EQ(plan[2].outcome, OperationState::rolled_back);
}

TEST(Reconcile, CreatingAndAbsentOnlyDropsTheRecord) {
  ReconcileInput in;
  in.next_thin_id = 6;
  in.devices = {dev(5, 5, DeviceState::creating)};
  in.pending = {op(9, OperationKind::create, 5, 5)};
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan), (std::vector<K>{K::drop_record, K::close_operation}));
  EXPECT_EQ(plan[1].outcome, OperationState::rolled_back);
}

TEST(Reconcile, DeletingIsFinishedWhetherOrNotTheKernelGotThere) {
  ReconcileInput in;
  in.next_thin_id = 10;
  in.devices = {dev(1, 1, DeviceState::deleting), dev(2, 2, DeviceState::deleting)};
  in.pending = {op(1, OperationKind::remove, 1, 1), op(2, OperationKind::remove, 2, 2)};
  in.pool_thin_ids = {1};  // 2 already gone
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan), (std::vector<K>{K::delete_thin, K::drop_record, K::drop_record,
                                         K::close_operation, K::close_operation}));
  EXPECT_EQ(plan[0].thin_id, 1u);
  EXPECT_EQ(plan[1].device_id, 1);
  EXPECT_EQ(plan[2].device_id, 2);
  EXPECT_EQ(plan[3].outcome, OperationState::completed_by_recovery);
  EXPECT_EQ(plan[4].outcome, OperationState::completed_by_recovery);
}

TEST(Reconcile, CreatedButMissingIsMarkedFaultyNotDropped) {
  ReconcileInput in;
  in.next_thin_id = 4;
  in.devices = {dev(3, 3, DeviceState::created)};
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan), (std::vector<K>{K::mark_faulty}));
  EXPECT_EQ(plan[0].device_id, 3);
  EXPECT_NE(plan[0].reason.find("missing from the pool"), std::string::npos);
}

TEST(Reconcile, FaultyDevicesAreLeftAlone) {
  ReconcileInput in;
  in.next_thin_id = 4;
  in.devices = {dev(3, 3, DeviceState::faulty), dev(2, 2, DeviceState::faulty)};
  in.pool_thin_ids = {2};
  EXPECT_TRUE(plan_reconcile(in).empty());
}

TEST(Reconcile, LeakedThinIdBelowCounterIsDeleted) {
  ReconcileInput in;
  in.next_thin_id = 10;
  in.devices = {dev(1, 1, DeviceState::created)};
  in.pool_thin_ids = {1, 7};
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan), (std::vector<K>{K::delete_thin}));
  EXPECT_EQ(plan[0].thin_id, 7u);
  EXPECT_EQ(plan[0].device_id, 0);
  EXPECT_NE(plan[0].reason.find("leaked"), std::string::npos);
}

TEST(Reconcile, ALeakFarBelowTheCounterIsDeletedButIdZeroIsNeverOurs) {
  // With the pool's full list (not probes near the counter) a leak anywhere
  // below the counter is found; id 0 is never handed out by this agent.
  ReconcileInput in;
  in.next_thin_id = 5000;
  in.devices = {dev(1, 4990, DeviceState::created)};
  in.pool_thin_ids = {0, 3, 4990};
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan), (std::vector<K>{K::delete_thin, K::report_foreign_thin}));
  EXPECT_EQ(plan[0].thin_id, 3u);
  EXPECT_EQ(plan[1].thin_id, 0u);
}

TEST(Reconcile, ForeignThinIdIsKeptReportedAndCounterAdvanced) {
  ReconcileInput in;
  in.next_thin_id = 5;
  in.pool_thin_ids = {5, 42};
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan),
            (std::vector<K>{K::advance_thin_id, K::report_foreign_thin, K::report_foreign_thin}));
  EXPECT_EQ(plan[0].thin_id, 43u);
  EXPECT_EQ(plan[1].thin_id, 5u);
  EXPECT_EQ(plan[2].thin_id, 42u);
}

TEST(Reconcile, SuspendedDevicesAreResumedFirstPoolBeforeThins) {
  ReconcileInput in;
  in.pool_dm_name = "stepsnap-pool";
  in.next_thin_id = 3;
  in.devices = {dev(1, 1, DeviceState::created, "stepsnap-ws"),
                dev(2, 2, DeviceState::deleting, "stepsnap-old")};
  in.pending = {op(4, OperationKind::remove, 2, 2)};
  in.pool_thin_ids = {1, 2};
  in.suspended = {"stepsnap-old", "stepsnap-ws", "someone-elses", "stepsnap-pool"};
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan), (std::vector<K>{K::resume_device, K::resume_device, K::resume_device,
                                         K::delete_thin, K::drop_record, K::close_operation}));
  EXPECT_EQ(plan[0].dm_name, "stepsnap-pool");
  EXPECT_EQ(plan[1].dm_name, "stepsnap-ws");
  EXPECT_EQ(plan[2].dm_name, "stepsnap-old");
  // A device that is not ours is never touched.
  for (const auto& a : plan) EXPECT_NE(a.dm_name, "someone-elses");
}

TEST(Reconcile, CrashBetweenSuspendAndCreateSnap) {
  // The intent for snapshot 8 of volume 1 was committed, the origin was
  // suspended, then the agent died before create_snap.
  ReconcileInput in;
  in.next_thin_id = 9;
  in.devices = {dev(1, 1, DeviceState::created, "stepsnap-ws"), dev(8, 8, DeviceState::creating)};
  in.pending = {op(20, OperationKind::create, 8, 8)};
  in.pool_thin_ids = {1};
  in.suspended = {"stepsnap-ws"};
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan), (std::vector<K>{K::resume_device, K::drop_record, K::close_operation}));
  EXPECT_EQ(plan[0].dm_name, "stepsnap-ws");
}

TEST(Reconcile, CrashBetweenCreateSnapAndResume) {
  ReconcileInput in;
  in.next_thin_id = 9;
  in.devices = {dev(1, 1, DeviceState::created, "stepsnap-ws"), dev(8, 8, DeviceState::creating)};
  in.pending = {op(20, OperationKind::create, 8, 8)};
  in.pool_thin_ids = {1, 8};
  in.suspended = {"stepsnap-ws"};
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan),
            (std::vector<K>{K::resume_device, K::delete_thin, K::drop_record, K::close_operation}));
  EXPECT_EQ(plan[1].thin_id, 8u);
}

TEST(Reconcile, PendingOperationWhoseDeviceMovedOnIsClosed) {
  // The device reached `created` but the operation close was lost (older
  // agent, or manual repair): close it as done.
  ReconcileInput in;
  in.next_thin_id = 2;
  in.devices = {dev(1, 1, DeviceState::created), dev(2, 0, DeviceState::faulty)};
  in.pool_thin_ids = {0, 1};
  in.pending = {op(3, OperationKind::create, 1, 1), op(4, OperationKind::create, 2, 0),
                op(5, OperationKind::remove, std::nullopt, 0)};
  auto plan = plan_reconcile(in);
  ASSERT_EQ(kinds(plan),
            (std::vector<K>{K::close_operation, K::close_operation, K::close_operation}));
  EXPECT_EQ(plan[0].outcome, OperationState::done);
  EXPECT_EQ(plan[1].outcome, OperationState::failed);
  EXPECT_EQ(plan[2].outcome, OperationState::failed);
}

TEST(Reconcile, PlanIsDeterministicWhateverTheInputOrder) {
  ReconcileInput a;
  a.next_thin_id = 20;
  a.devices = {dev(3, 3, DeviceState::deleting), dev(1, 1, DeviceState::creating),
               dev(2, 2, DeviceState::created)};
  a.pool_thin_ids = {3, 1, 15, 12};
  a.pending = {op(7, OperationKind::remove, 3, 3), op(6, OperationKind::create, 1, 1)};
  ReconcileInput b = a;
  std::reverse(b.devices.begin(), b.devices.end());
  std::reverse(b.pool_thin_ids.begin(), b.pool_thin_ids.end());
  std::reverse(b.pending.begin(), b.pending.end());
  auto plan = plan_reconcile(a);
  EXPECT_EQ(plan, plan_reconcile(b));
  // Deletes sorted by thin id: 1 (rollback), 3 (finish), 12 and 15 (leaked).
  std::vector<std::uint32_t> deleted;
  for (const auto& x : plan)
    if (x.kind == K::delete_thin) deleted.push_back(x.thin_id);
  EXPECT_EQ(deleted, (std::vector<std::uint32_t>{1, 3, 12, 15}));
  // 2 is created but missing: faulty.
  EXPECT_EQ(std::count_if(plan.begin(), plan.end(),
                          [](const auto& x) { return x.kind == K::mark_faulty; }),
            1);
}

TEST(Reconcile, EveryActionHasAReason) {
  ReconcileInput in;
  in.pool_dm_name = "p";
  in.suspended = {"p"};
  in.next_thin_id = 3;
  in.devices = {dev(1, 1, DeviceState::creating), dev(2, 2, DeviceState::created)};
  in.pending = {op(1, OperationKind::create, 1, 1)};
  in.pool_thin_ids = {1, 99};
  for (const auto& a : plan_reconcile(in)) {
    EXPECT_FALSE(a.reason.empty()) << to_string(a.kind);
  }
}

}  // namespace
}  // namespace stepsnap::agent
