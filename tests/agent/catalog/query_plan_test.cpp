// The reads a client can page through at scale (snapshot.list of a run, of a
// volume or of the pool, volume.list, snapshot.show, run.show's steps, events
// after a seq, the view's run clones, run position and names) never SCAN a
// big table: each statement the catalog and the
// event log really prepare for them is recorded and its EXPLAIN QUERY PLAN
// checked. No ANALYZE, as in the daemon: these are the plans it gets.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agent/catalog/catalog.h"
#include "agent/events/event_log.h"
#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

using testing::open_db;
using testing::TempDir;

// Each plan line, "SCAN d" or "SEARCH d USING INDEX ..." and so on.
std::vector<std::string> plan_of(Database& db, const std::string& sql) {
  auto st = db.prepare("EXPLAIN QUERY PLAN " + sql);
  EXPECT_TRUE(st) << st.error().message();
  std::vector<std::string> lines;
  if (!st) return lines;
  for (;;) {
    auto row = st->step();
    EXPECT_TRUE(row) << row.error().message();
    if (!row || !*row) break;
    lines.push_back(st->text(3));
  }
  return lines;
}

// A SCAN of one of the tables that grow with snapshots or events. "SCAN up"
// (the lineage walk's own queue) and temporary b-trees are fine.
bool scans_big_table(const std::string& line) {
  for (const char* t : {"devices", "d", "step_snapshots", "s", "labels", "events", "steps"}) {
    std::string scan = std::string("SCAN ") + t;
    if (line == scan || line.rfind(scan + " ", 0) == 0) return true;
  }
  return false;
}

TEST(QueryPlan, PagedListsShowLineageAndEventReadsSearchIndexes) {
  TempDir dir;
  auto db = open_db(dir.file("catalog.db"));
  ASSERT_TRUE(db);
  auto catalog = Catalog::open(db);
  ASSERT_TRUE(catalog) << catalog.error().message();
  auto log = EventLog::open(db);
  ASSERT_TRUE(log) << log.error().message();
  auto pool = catalog->add_pool({"pool0", "/dev/loop0", "/dev/loop1", 65536});
  ASSERT_TRUE(pool);
  auto make = [&](const std::string& name, DeviceKind kind, std::optional<std::int64_t> origin,
                  std::optional<StepInfo> step = {}) {
    auto intent = catalog->begin_create({.pool_id = pool->id,
                                         .name = name,
                                         .kind = kind,
                                         .origin_id = origin,
                                         .size_bytes = origin ? 0u : 1u << 20,
                                         .labels = {{"k", "v"}},
                                         .step = std::move(step)});
    EXPECT_TRUE(intent) << intent.error().message();
    EXPECT_TRUE(catalog->finish_create(*intent, ""));
    return intent->device_id;
  };
  auto ws = make("ws", DeviceKind::volume, {});
  std::int64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    last = make("ws-" + std::to_string(i), DeviceKind::snapshot, ws,
                StepInfo{.pipeline = "p", .run = "r" + std::to_string(i % 4), .step = "s"});
    ASSERT_TRUE((*log)->append(EventType::snapshot_created, {{"name", i}}));
  }
  ASSERT_TRUE(catalog->save_step({.pipeline = "p", .run = "r1", .step = "s", .cgroup = "/x"}));

  std::vector<std::string> statements;
  db->on_prepare([&](const std::string& sql) { statements.push_back(sql); });
  ASSERT_TRUE(catalog->list_devices({.pool_id = pool->id,
                                     .kind = DeviceKind::snapshot,
                                     .pipeline = "p",
                                     .run = "r1",
                                     .after_id = 3,
                                     .limit = 10}));
  ASSERT_TRUE(catalog->list_devices({.pool_id = pool->id,
                                     .kind = DeviceKind::snapshot,
                                     .pipeline = "p",
                                     .run = "r1",
                                     .step = "s",
                                     .limit = 10}));
  ASSERT_TRUE(catalog->list_devices({.pool_id = pool->id,
                                     .kind = DeviceKind::snapshot,
                                     .origin_id = ws,
                                     .after_id = 3,
                                     .limit = 10}));
  ASSERT_TRUE(
      catalog->list_devices({.pool_id = pool->id, .kind = DeviceKind::snapshot, .limit = 10}));
  ASSERT_TRUE(catalog->list_devices(
      {.pool_id = pool->id, .kind = DeviceKind::snapshot, .after_id = 3, .limit = 10}));
  ASSERT_TRUE(catalog->list_devices(
      {.pool_id = pool->id, .kinds = {DeviceKind::volume, DeviceKind::clone}, .limit = 10}));
  ASSERT_TRUE(catalog->get_device(last));
  ASSERT_TRUE(catalog->find_device(pool->id, "ws-7"));
  ASSERT_TRUE(catalog->lineage(last, 1000));
  ASSERT_TRUE(catalog->newest_snapshot(ws));
  ASSERT_TRUE(catalog->list_steps("p", "r1"));
  ASSERT_TRUE(catalog->find_step("p", "r1", "s"));
  ASSERT_TRUE((*log)->read_since(5, 1000));
  // The view's reads of one run and of names (agent/view/view_store.h).
  ASSERT_TRUE(catalog->list_run_clones("p", "r1"));
  ASSERT_TRUE(catalog->find_run_key("p", "r1"));
  ASSERT_TRUE(catalog->device_names({ws, last}));
  // run.create's check that a run name is new.
  ASSERT_TRUE(catalog->run_exists(pool->id, "p", "r1"));
  db->on_prepare({});

  ASSERT_GE(statements.size(), 16u);
  for (const auto& sql : statements) {
    if (sql.rfind("SELECT", 0) != 0 && sql.rfind("WITH", 0) != 0) continue;
    auto plan = plan_of(*db, sql);
    std::string shown;
    for (const auto& l : plan) shown += "\n  " + l;
    for (const auto& line : plan) {
      EXPECT_FALSE(scans_big_table(line)) << sql << shown;
    }
  }
}

}  // namespace
}  // namespace stepsnap::agent
