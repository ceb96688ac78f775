// Paging through the catalog's lists (the API's snapshot.list and
// volume.list pages): every row exactly once, in id order, with the filters
// applied before the page is cut.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agent/catalog/catalog.h"
#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

using testing::open_db;
using testing::TempDir;

class CatalogPagingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = Catalog::open(open_db(dir_.file("catalog.db")));
    ASSERT_TRUE(c) << c.error().message();
    catalog_.emplace(std::move(*c));
    auto pool = catalog_->add_pool({"pool0", "/dev/loop0", "/dev/loop1", 65536});
    ASSERT_TRUE(pool) << pool.error().message();
    pool_ = *pool;
  }

  DeviceRecord make(const std::string& name, DeviceKind kind, std::optional<std::int64_t> origin,
                    std::optional<StepInfo> step = {}) {
    CreateSpec spec{.pool_id = pool_.id,
                    .name = name,
                    .kind = kind,
                    .origin_id = origin,
                    .size_bytes = origin ? 0u : 1u << 20,
                    .step = std::move(step)};
    auto intent = catalog_->begin_create(spec);
    EXPECT_TRUE(intent) << intent.error().message();
    EXPECT_TRUE(catalog_->finish_create(*intent, ""));
    return *catalog_->get_device(intent->device_id);
  }

  // Every page of `filter` with `limit` rows each, the way a client pages:
  // the next page starts after the last row of the one before.
  std::vector<std::vector<std::string>> pages(DeviceFilter filter, std::size_t limit) {
    std::vector<std::vector<std::string>> out;
    filter.limit = limit;
    for (;;) {
      auto page = catalog_->list_devices(filter);
      EXPECT_TRUE(page) << page.error().message();
      if (!page || page->empty()) return out;
      EXPECT_LE(page->size(), limit);
      out.emplace_back();
      for (const auto& d : *page) out.back().push_back(d.name);
      filter.after_id = page->back().id;
      if (out.size() > 100) return out;  // a paging bug must not hang the test
    }
  }

  TempDir dir_;
  std::optional<Catalog> catalog_;
  PoolRecord pool_;
};

// A list fills its rows' labels and step records a chunk of ids at a time
// (fill_all); each row must come out as the device read alone (get_device,
// one row's labels and step each) does, across chunk boundaries, rows with
// none, and labels set after the fact.
TEST_F(CatalogPagingTest, AListsBatchedFillIsEachDeviceReadAlone) {
  auto vol = make("ws", DeviceKind::volume, std::nullopt);
  {
    auto sp = Savepoint::begin(catalog_->db());  // one commit for them all
    ASSERT_TRUE(sp);
    for (int i = 0; i < 1203; ++i) {
      std::optional<StepInfo> step;
      if (i % 3 != 0)
        step = StepInfo{"p",
                        "r" + std::to_string(i / 20),
                        "s" + std::to_string(i % 7),
                        i % 2 ? Phase::post : Phase::pre,
                        "cmd " + std::to_string(i),
                        i % 2 ? std::optional<int>(i % 5 - 2) : std::nullopt};
      auto d = make("snap-" + std::to_string(i), DeviceKind::snapshot, vol.id, step);
      Labels labels;
      for (int k = 0; k < i % 4; ++k) labels["k" + std::to_string(k)] = "v" + std::to_string(i);
      if (!labels.empty()) {
        ASSERT_TRUE(catalog_->set_labels(d.id, labels));
      }
    }
    ASSERT_TRUE(sp->commit());
  }
  auto listed = catalog_->list_devices({.pool_id = pool_.id});
  ASSERT_TRUE(listed) << listed.error().message();
  ASSERT_EQ(listed->size(), 1204u);
  std::size_t with_labels = 0, with_steps = 0;
  for (const auto& d : *listed) {
    auto alone = catalog_->get_device(d.id);
    ASSERT_TRUE(alone) << alone.error().message();
    EXPECT_EQ(d.name, alone->name);
    EXPECT_EQ(d.labels, alone->labels) << d.name;
    ASSERT_EQ(d.step.has_value(), alone->step.has_value()) << d.name;
    if (d.step) {
      EXPECT_EQ(d.step->pipeline, alone->step->pipeline);
      EXPECT_EQ(d.step->run, alone->step->run) << d.name;
      EXPECT_EQ(d.step->step, alone->step->step) << d.name;
      EXPECT_EQ(d.step->phase, alone->step->phase) << d.name;
      EXPECT_EQ(d.step->command, alone->step->command) << d.name;
      EXPECT_EQ(d.step->exit_status, alone->step->exit_status) << d.name;
    }
    with_labels += !d.labels.empty();
    with_steps += d.step.has_value();
  }
  EXPECT_EQ(with_labels, 902u) << "3 of every 4 snapshots have labels";
  EXPECT_EQ(with_steps, 802u) << "2 of every 3 snapshots are step snapshots";
}

TEST_F(CatalogPagingTest, ARunsSnapshotsComeInExactPagesAmongOtherRuns) {
  auto ws = make("ws", DeviceKind::volume, {});
  auto data = make("data", DeviceKind::volume, {});
  // Runs a and b interleaved, on two volumes, so that a page of run a is cut
  // from rows that are not contiguous in id order.
  std::vector<std::string> run_a;
  for (int i = 0; i < 7; ++i) {
    for (const char* run : {"a", "b"}) {
      for (const auto* vol : {&ws, &data}) {
        std::string name = vol->name + "-" + run + "-" + std::to_string(i);
        make(name, DeviceKind::snapshot, vol->id,
             StepInfo{.pipeline = "p", .run = run, .step = "s" + std::to_string(i)});
        if (std::string(run) == "a") run_a.push_back(name);
      }
    }
  }
  ASSERT_EQ(run_a.size(), 14u);
  auto got = pages({.kind = DeviceKind::snapshot, .pipeline = "p", .run = "a"}, 5);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], std::vector<std::string>(run_a.begin(), run_a.begin() + 5));
  EXPECT_EQ(got[1], std::vector<std::string>(run_a.begin() + 5, run_a.begin() + 10));
  EXPECT_EQ(got[2], std::vector<std::string>(run_a.begin() + 10, run_a.end()));

  // One step of the run, and a page size that divides the rows exactly:
  // the last page is full and the next one is empty, not an error.
  auto step = pages({.kind = DeviceKind::snapshot, .pipeline = "p", .run = "a", .step = "s3"}, 2);
  ASSERT_EQ(step.size(), 1u);
  EXPECT_EQ(step[0], (std::vector<std::string>{"ws-a-3", "data-a-3"}));
}

TEST_F(CatalogPagingTest, SnapshotsOfOneVolumeAndVolumesAloneArePagedInIdOrder) {
  auto ws = make("ws", DeviceKind::volume, {});
  auto data = make("data", DeviceKind::volume, {});
  std::vector<std::string> of_ws, all_snaps;
  for (int i = 0; i < 9; ++i) {
    auto s = make("ws-" + std::to_string(i), DeviceKind::snapshot, ws.id);
    of_ws.push_back(s.name);
    all_snaps.push_back(s.name);
    all_snaps.push_back(make("data-" + std::to_string(i), DeviceKind::snapshot, data.id).name);
  }
  auto first_ws = catalog_->list_devices({.kind = DeviceKind::snapshot, .origin_id = ws.id});
  ASSERT_TRUE(first_ws);
  auto clone = make("ws-clone", DeviceKind::clone, (*first_ws)[0].id);

  auto got = pages({.kind = DeviceKind::snapshot, .origin_id = ws.id}, 4);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], std::vector<std::string>(of_ws.begin(), of_ws.begin() + 4));
  EXPECT_EQ(got[1], std::vector<std::string>(of_ws.begin() + 4, of_ws.begin() + 8));
  EXPECT_EQ(got[2], std::vector<std::string>(of_ws.begin() + 8, of_ws.end()));

  std::vector<std::string> flat;
  for (const auto& p : pages({.kind = DeviceKind::snapshot}, 7)) {
    EXPECT_LE(p.size(), 7u);
    flat.insert(flat.end(), p.begin(), p.end());
  }
  EXPECT_EQ(flat, all_snaps);

  // volume.list's kinds: volumes and clones, never a snapshot.
  auto vols = pages({.kinds = {DeviceKind::volume, DeviceKind::clone}}, 2);
  ASSERT_EQ(vols.size(), 2u);
  EXPECT_EQ(vols[0], (std::vector<std::string>{"ws", "data"}));
  EXPECT_EQ(vols[1], (std::vector<std::string>{"ws-clone"}));
}

TEST_F(CatalogPagingTest, LineageIsTheParentChainNearestFirstAndBounded) {
  auto ws = make("ws", DeviceKind::volume, {});
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 6; ++i)
    ids.push_back(make("v" + std::to_string(i), DeviceKind::snapshot, ws.id).id);
  auto all = catalog_->lineage(ids.back(), 100);
  ASSERT_TRUE(all) << all.error().message();
  EXPECT_EQ(*all, (std::vector<std::string>{"v4", "v3", "v2", "v1", "v0"}));
  EXPECT_EQ(*catalog_->lineage(ids.back(), 2), (std::vector<std::string>{"v4", "v3"}));
  EXPECT_TRUE(catalog_->lineage(ids.front(), 100)->empty());
  // run.clone's source: the newest created one, found without the list.
  auto newest = catalog_->newest_snapshot(ws.id);
  ASSERT_TRUE(newest && *newest);
  EXPECT_EQ((*newest)->name, "v5");
  ASSERT_TRUE(catalog_->mark_faulty(ids.back(), "test"));
  EXPECT_EQ((*catalog_->newest_snapshot(ws.id))->name, "v4");
}

// The view's runs list pages by position, not id: newest first by the
// earliest time of each run, ties by pipeline then run. Runs with the same
// time straddle a page boundary and still come once each; a run added
// before the position since does not shift the pages after it.
TEST_F(CatalogPagingTest, RunsPageNewestFirstWithTiesBrokenByName) {
  auto step = [&](const std::string& pipeline, const std::string& run, std::int64_t t) {
    StepRecord r;
    r.pipeline = pipeline;
    r.run = run;
    r.step = "s";
    r.cgroup = "/x";
    r.state = "finished";
    r.registered_ns = t;
    ASSERT_TRUE(catalog_->save_step(r));
  };
  step("p", "a", 30);
  step("p", "b", 20);
  step("q", "a", 20);
  step("p", "c", 20);
  step("p", "d", 10);
  // A plan's time counts as the run's too: p/e's plan is older than its step.
  ASSERT_TRUE(catalog_->save_run_plan({.pipeline = "p", .run = "e"}));
  std::vector<std::string> seen;
  RunFilter f{.limit = 2};
  for (int pages = 0; pages < 10; ++pages) {
    auto page = catalog_->list_runs(f);
    ASSERT_TRUE(page) << page.error().message();
    if (page->empty()) break;
    EXPECT_LE(page->size(), 2u);
    for (const auto& k : *page) seen.push_back(k.pipeline + "/" + k.run);
    auto key = catalog_->find_run_key(page->back().pipeline, page->back().run);
    ASSERT_TRUE(key && *key);
    EXPECT_EQ((*key)->first_ns, page->back().first_ns);
    f.after = **key;
    if (pages == 0) step("z", "new", 40);  // newer than the position: not on later pages
  }
  // p/e's plan was made now (created_ns is the clock), the newest of all.
  EXPECT_EQ(seen, (std::vector<std::string>{"p/e", "p/a", "p/b", "p/c", "q/a", "p/d"}));
  auto none = catalog_->find_run_key("p", "nope");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

}  // namespace
}  // namespace stepsnap::agent
