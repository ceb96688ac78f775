#include "agent/catalog/catalog.h"

#include <gtest/gtest.h>

#include <cerrno>

#include "agent/catalog/catalog_schema.h"
#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

using testing::open_db;
using testing::TempDir;

class CatalogTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }

  void reopen() {
    catalog_.reset();
    auto c = Catalog::open(open_db(dir_.file("catalog.db")));
    ASSERT_TRUE(c) << c.error().message();
    catalog_.emplace(std::move(*c));
    auto pool = catalog_->find_pool("pool0");
    ASSERT_TRUE(pool);
    if (*pool) {
      pool_ = **pool;
    } else {
      auto added = catalog_->add_pool({"pool0", "/dev/loop0", "/dev/loop1", 65536});
      ASSERT_TRUE(added) << added.error().message();
      pool_ = *added;
    }
  }

  // Creates a device the way the daemon will: intent, (kernel), finish.
  DeviceRecord make(const std::string& name, DeviceKind kind,
                    std::optional<std::int64_t> origin = {}, std::uint64_t size = 1 << 30) {
    CreateSpec spec{.pool_id = pool_.id,
                    .name = name,
                    .kind = kind,
                    .origin_id = origin,
                    .size_bytes = kind == DeviceKind::volume && !origin ? size : 0};
    auto intent = catalog_->begin_create(spec);
    EXPECT_TRUE(intent) << intent.error().message();
    auto done = catalog_->finish_create(*intent, "stepsnap-" + name, 4096);
    EXPECT_TRUE(done) << done.error().message();
    return *catalog_->get_device(intent->device_id);
  }

  TempDir dir_;
  std::optional<Catalog> catalog_;
  PoolRecord pool_;
};

TEST_F(CatalogTest, OpensInWalModeAtLatestSchemaVersion) {
  EXPECT_EQ(catalog_->db().pragma_text("journal_mode"), "wal");
  EXPECT_EQ(catalog_->db().pragma_text("synchronous"), "2");  // FULL
  EXPECT_EQ(catalog_->db().pragma_text("foreign_keys"), "1");
  EXPECT_EQ(*catalog_->schema_version(), Catalog::latest_schema_version());
}

TEST_F(CatalogTest, ReopeningDoesNotReapplyMigrationsAndKeepsData) {
  make("workspace", DeviceKind::volume);
  reopen();
  EXPECT_EQ(*catalog_->schema_version(), Catalog::latest_schema_version());
  auto found = catalog_->find_device(pool_.id, "workspace");
  ASSERT_TRUE(found);
  ASSERT_TRUE(*found);
  EXPECT_EQ((*found)->state, DeviceState::created);
}

TEST_F(CatalogTest, RefusesASchemaNewerThanTheAgent) {
  ASSERT_TRUE(catalog_->db().exec("INSERT INTO schema_migrations VALUES (999, 0)"));
  auto again = Catalog::open(open_db(dir_.file("catalog.db")));
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("newer than this agent"), std::string::npos);
}

// What recovery needs to roll back a create a crash cut short: the dm name
// the device is being activated under is in the creating row.
TEST_F(CatalogTest, ACreatingRowRecordsTheDmNameItIsBeingActivatedUnder) {
  auto intent = catalog_->begin_create({.pool_id = pool_.id,
                                        .name = "v",
                                        .kind = DeviceKind::volume,
                                        .size_bytes = 1 << 20,
                                        .dm_name = "pool0-vol-v"});
  ASSERT_TRUE(intent) << intent.error().message();
  auto d = catalog_->get_device(intent->device_id);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->state, DeviceState::creating);
  EXPECT_EQ(d->dm_name, "pool0-vol-v");
}

// run.create clones snapshots its own transaction has not finished yet;
// nothing else may use a creating origin.
TEST_F(CatalogTest, OnlyTheSameOperationMayCloneACreatingOrigin) {
  DeviceRecord vol = make("ws", DeviceKind::volume);
  auto snap = catalog_->begin_create({.pool_id = pool_.id,
                                      .name = "ws.initial",
                                      .kind = DeviceKind::snapshot,
                                      .origin_id = vol.id});
  ASSERT_TRUE(snap) << snap.error().message();
  auto other = catalog_->begin_create({.pool_id = pool_.id,
                                       .name = "other",
                                       .kind = DeviceKind::clone,
                                       .origin_id = snap->device_id});
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().err, EBUSY);
  auto same = catalog_->begin_create({.pool_id = pool_.id,
                                      .name = "p.r.ws",
                                      .kind = DeviceKind::clone,
                                      .origin_id = snap->device_id,
                                      .origin_in_same_operation = true});
  EXPECT_TRUE(same) << same.error().message();
}

TEST_F(CatalogTest, ARunExistsOnceItHasAClone) {
  EXPECT_FALSE(*catalog_->run_exists(pool_.id, "p", "rx1"));
  DeviceRecord vol = make("ws", DeviceKind::volume);
  DeviceRecord snap = make("ws.s", DeviceKind::snapshot, vol.id);
  auto clone = catalog_->begin_create({.pool_id = pool_.id,
                                       .name = "p.rx1.ws",
                                       .kind = DeviceKind::clone,
                                       .origin_id = snap.id,
                                       .run_clone = RunCloneKey{"p", "rx1", "ws"}});
  ASSERT_TRUE(clone) << clone.error().message();
  EXPECT_TRUE(*catalog_->run_exists(pool_.id, "p", "rx1"));
  // A match on the whole "<pipeline>/<run>/": no shorter run, and '_' is no
  // wildcard (LIKE 'p/r_1/%' would match this clone).
  EXPECT_FALSE(*catalog_->run_exists(pool_.id, "p", "r_1"));
  EXPECT_FALSE(*catalog_->run_exists(pool_.id, "p", "rx"));
  EXPECT_FALSE(*catalog_->run_exists(pool_.id, "q", "rx1"));
}

TEST_F(CatalogTest, ARunsPlanIsKeptAndMakesTheRunExist) {
  EXPECT_FALSE(*catalog_->find_run_plan("p", "r1"));
  RunPlanRecord plan{.pipeline = "p",
                     .run = "r1",
                     .steps = {{"prepare", {}}, {"fit", {"prepare"}}},
                     .restored = {"prepare"},
                     .restored_from = "r0"};
  ASSERT_TRUE(catalog_->save_run_plan(plan));
  auto read = catalog_->find_run_plan("p", "r1");
  ASSERT_TRUE(read && *read);
  ASSERT_EQ((*read)->steps.size(), 2u);
  EXPECT_EQ((*read)->steps[1].step, "fit");
  EXPECT_EQ((*read)->steps[1].after, (std::vector<std::string>{"prepare"}));
  EXPECT_EQ((*read)->restored, (std::vector<std::string>{"prepare"}));
  EXPECT_EQ((*read)->restored_from, "r0");
  EXPECT_TRUE(*catalog_->run_exists(pool_.id, "p", "r1"));
  auto runs = catalog_->list_runs();
  ASSERT_TRUE(runs);
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].run, "r1");
  // One plan per run.
  EXPECT_FALSE(catalog_->save_run_plan(plan));
}

TEST_F(CatalogTest, EveryDeviceGetsItsOwnUuid) {
  auto vol = make("ws", DeviceKind::volume);
  auto snap = make("ws-s1", DeviceKind::snapshot, vol.id);
  EXPECT_EQ(vol.uuid.size(), 32u);
  EXPECT_EQ(snap.uuid.find_first_not_of("0123456789abcdef"), std::string::npos) << snap.uuid;
  EXPECT_NE(vol.uuid, snap.uuid);
  auto found = catalog_->find_device_by_uuid(pool_.id, snap.uuid);
  ASSERT_TRUE(found && *found);
  EXPECT_EQ((*found)->name, "ws-s1");
}

TEST_F(CatalogTest, AReceivedSnapshotKeepsItsUuidAndHasNoOriginButItsBaseAsParent) {
  auto vol = make("ws", DeviceKind::volume);
  auto base = make("s0", DeviceKind::snapshot, vol.id);
  CreateSpec spec{.pool_id = pool_.id,
                  .name = "s1",
                  .kind = DeviceKind::snapshot,
                  .size_bytes = 1 << 30,
                  .uuid = "00112233445566778899aabbccddeeff",
                  .received_from = R"({"node":"a","pool":"pa","name":"s1"})",
                  .parent_id = base.id};
  auto intent = catalog_->begin_create(spec);
  ASSERT_TRUE(intent) << intent.error().message();
  ASSERT_TRUE(catalog_->finish_create(*intent, ""));
  auto d = catalog_->get_device(intent->device_id);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->uuid, "00112233445566778899aabbccddeeff");
  EXPECT_FALSE(d->origin_id);
  EXPECT_EQ(d->parent_id, base.id);
  EXPECT_EQ(d->received_from, R"({"node":"a","pool":"pa","name":"s1"})");

  // The same uuid twice is refused by the catalog itself.
  spec.name = "s1-again";
  spec.parent_id.reset();
  EXPECT_FALSE(catalog_->begin_create(spec));
  // Only a received snapshot may lack an origin.
  CreateSpec local{.pool_id = pool_.id, .name = "orphan", .kind = DeviceKind::snapshot};
  EXPECT_FALSE(catalog_->begin_create(local));
}

TEST_F(CatalogTest, DuplicatePoolIsEexist) {
  auto again = catalog_->add_pool({"pool0", "/dev/a", "/dev/b", 65536});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().err, EEXIST);
}

TEST_F(CatalogTest, CreateWritesIntentBeforeAndResultAfter) {
  auto intent = catalog_->begin_create(
      {.pool_id = pool_.id, .name = "data", .kind = DeviceKind::volume, .size_bytes = 1 << 20});
  ASSERT_TRUE(intent) << intent.error().message();
  EXPECT_EQ(catalog_->get_device(intent->device_id)->state, DeviceState::creating);
  auto pending = catalog_->pending_operations(pool_.id);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].kind, OperationKind::create);
  EXPECT_EQ((*pending)[0].thin_id, intent->thin_id);

  ASSERT_TRUE(catalog_->finish_create(*intent, "stepsnap-data", 0));
  EXPECT_EQ(catalog_->get_device(intent->device_id)->state, DeviceState::created);
  EXPECT_TRUE(catalog_->pending_operations(pool_.id)->empty());
}

TEST_F(CatalogTest, ThinIdsIncreaseAndAreNeverReused) {
  auto a = make("a", DeviceKind::volume);
  auto b = make("b", DeviceKind::volume);
  EXPECT_EQ(b.thin_id, a.thin_id + 1);
  auto del = catalog_->begin_delete(b.id);
  ASSERT_TRUE(del);
  ASSERT_TRUE(catalog_->finish_delete(*del));
  reopen();
  auto c = make("c", DeviceKind::volume);
  EXPECT_EQ(c.thin_id, b.thin_id + 1);  // b's id is not handed out again
}

TEST_F(CatalogTest, AnIdThePoolReservedIsRecordedAndTheCounterMovesPastIt) {
  // dm::ThinPool reserves ids itself (gaps are normal: a reserve whose
  // create never happened is skipped); the catalog records what it is given.
  auto intent = catalog_->begin_create({.pool_id = pool_.id,
                                        .name = "v",
                                        .kind = DeviceKind::volume,
                                        .size_bytes = 4096,
                                        .thin_id = 42});
  ASSERT_TRUE(intent) << intent.error().message();
  EXPECT_EQ(intent->thin_id, 42u);
  EXPECT_EQ(catalog_->get_pool(pool_.id)->next_thin_id, 43u);
  EXPECT_EQ(make("next", DeviceKind::volume).thin_id, 43u);

  // An id below the counter was handed out before: refused, nothing written.
  auto reused = catalog_->begin_create({.pool_id = pool_.id,
                                        .name = "again",
                                        .kind = DeviceKind::volume,
                                        .size_bytes = 4096,
                                        .thin_id = 42});
  ASSERT_FALSE(reused);
  EXPECT_EQ(reused.error().err, EINVAL);
  EXPECT_FALSE(*catalog_->find_device(pool_.id, "again"));
}

TEST_F(CatalogTest, ThinIdSpaceExhaustionIsEnospc) {
  ASSERT_TRUE(catalog_->advance_thin_id(pool_.id, kMaxThinId));
  make("last", DeviceKind::volume);
  auto over = catalog_->begin_create(
      {.pool_id = pool_.id, .name = "over", .kind = DeviceKind::volume, .size_bytes = 4096});
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().err, ENOSPC);
  EXPECT_NE(over.error().message().find("new pool"), std::string::npos);
}

TEST_F(CatalogTest, AdvanceThinIdNeverLowersTheCounter) {
  ASSERT_TRUE(catalog_->advance_thin_id(pool_.id, 100));
  ASSERT_TRUE(catalog_->advance_thin_id(pool_.id, 50));
  EXPECT_EQ(catalog_->get_pool(pool_.id)->next_thin_id, 100u);
}

TEST_F(CatalogTest, DuplicateNameIsEexistAndLeavesNoTrace) {
  make("ws", DeviceKind::volume);
  auto next_before = catalog_->get_pool(pool_.id)->next_thin_id;
  auto again = catalog_->begin_create(
      {.pool_id = pool_.id, .name = "ws", .kind = DeviceKind::volume, .size_bytes = 4096});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().err, EEXIST);
  EXPECT_EQ(catalog_->get_pool(pool_.id)->next_thin_id, next_before);
  EXPECT_TRUE(catalog_->pending_operations(pool_.id)->empty());
}

TEST_F(CatalogTest, SnapshotRecordsOriginParentSizeAndStepMetadata) {
  auto vol = make("ws", DeviceKind::volume, {}, 8 << 20);
  auto first = make("ws-initial", DeviceKind::snapshot, vol.id);
  EXPECT_EQ(first.origin_id, vol.id);
  EXPECT_FALSE(first.parent_id);
  EXPECT_EQ(first.size_bytes, 8u << 20);

  CreateSpec spec{.pool_id = pool_.id,
                  .name = "ws-step1-post",
                  .kind = DeviceKind::snapshot,
                  .origin_id = vol.id,
                  .labels = {{"team", "ml"}, {"notebook", "train.ipynb"}},
                  .step = StepInfo{"pipe", "run-7", "train", Phase::post, "python train.py", 3}};
  auto intent = catalog_->begin_create(spec);
  ASSERT_TRUE(intent) << intent.error().message();
  ASSERT_TRUE(catalog_->finish_create(*intent, "", 123));
  auto snap = *catalog_->get_device(intent->device_id);
  EXPECT_EQ(snap.parent_id, first.id);
  EXPECT_EQ(snap.mapped_bytes, 123u);
  EXPECT_EQ(snap.labels, (Labels{{"notebook", "train.ipynb"}, {"team", "ml"}}));
  ASSERT_TRUE(snap.step);
  EXPECT_EQ(snap.step->run, "run-7");
  EXPECT_EQ(snap.step->phase, Phase::post);
  EXPECT_EQ(snap.step->command, "python train.py");
  EXPECT_EQ(snap.step->exit_status, 3);

  auto of_run = catalog_->list_devices({.pipeline = "pipe", .run = "run-7"});
  ASSERT_EQ(of_run->size(), 1u);
  EXPECT_EQ((*of_run)[0].name, "ws-step1-post");
  EXPECT_EQ(catalog_->list_devices({.kind = DeviceKind::snapshot})->size(), 2u);
  EXPECT_EQ(catalog_->list_devices({.origin_id = vol.id})->size(), 2u);
}

TEST_F(CatalogTest, LineageRules) {
  auto vol = make("ws", DeviceKind::volume);
  auto snap = make("s1", DeviceKind::snapshot, vol.id);
  auto clone = make("c1", DeviceKind::clone, snap.id);
  EXPECT_EQ(clone.origin_id, snap.id);
  // A snapshot of a clone is fine: steps run on clones.
  make("c1-pre", DeviceKind::snapshot, clone.id);

  auto snap_of_snap = catalog_->begin_create(
      {.pool_id = pool_.id, .name = "bad", .kind = DeviceKind::snapshot, .origin_id = snap.id});
  ASSERT_FALSE(snap_of_snap);
  EXPECT_EQ(snap_of_snap.error().err, EINVAL);
  auto clone_of_vol = catalog_->begin_create(
      {.pool_id = pool_.id, .name = "bad", .kind = DeviceKind::clone, .origin_id = vol.id});
  ASSERT_FALSE(clone_of_vol);
  auto no_origin =
      catalog_->begin_create({.pool_id = pool_.id, .name = "bad", .kind = DeviceKind::clone});
  ASSERT_FALSE(no_origin);
  auto missing = catalog_->begin_create(
      {.pool_id = pool_.id, .name = "bad", .kind = DeviceKind::clone, .origin_id = 9999});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().err, ENOENT);
}

TEST_F(CatalogTest, OriginMidTransitionIsEbusy) {
  auto intent = catalog_->begin_create(
      {.pool_id = pool_.id, .name = "ws", .kind = DeviceKind::volume, .size_bytes = 4096});
  ASSERT_TRUE(intent);
  auto snap = catalog_->begin_create({.pool_id = pool_.id,
                                      .name = "s",
                                      .kind = DeviceKind::snapshot,
                                      .origin_id = intent->device_id});
  ASSERT_FALSE(snap);
  EXPECT_EQ(snap.error().err, EBUSY);
}

TEST_F(CatalogTest, AbortCreateDropsOrKeepsAsFaulty) {
  auto gone = catalog_->begin_create(
      {.pool_id = pool_.id, .name = "gone", .kind = DeviceKind::volume, .size_bytes = 4096});
  ASSERT_TRUE(catalog_->abort_create(*gone, fail("create_thin", "gone", ENOSPC).value(), false));
  EXPECT_FALSE(*catalog_->find_device(pool_.id, "gone"));

  auto stuck = catalog_->begin_create(
      {.pool_id = pool_.id, .name = "stuck", .kind = DeviceKind::volume, .size_bytes = 4096});
  ASSERT_TRUE(catalog_->abort_create(*stuck, fail("activate", "stuck", EIO).value(), true));
  auto d = catalog_->get_device(stuck->device_id);
  EXPECT_EQ(d->state, DeviceState::faulty);
  EXPECT_NE(d->fault.find("Input/output error"), std::string::npos);
  EXPECT_TRUE(catalog_->pending_operations(pool_.id)->empty());
}

TEST_F(CatalogTest, DeleteTransitionsAndBusyRetry) {
  auto vol = make("ws", DeviceKind::volume);
  auto del = catalog_->begin_delete(vol.id);
  ASSERT_TRUE(del);
  EXPECT_EQ(catalog_->get_device(vol.id)->state, DeviceState::deleting);
  auto twice = catalog_->begin_delete(vol.id);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().err, EBUSY);
  // The kernel said EBUSY: the device is back to created, the op is failed.
  ASSERT_TRUE(catalog_->abort_delete(*del, fail("delete", "ws", EBUSY).value(), true));
  EXPECT_EQ(catalog_->get_device(vol.id)->state, DeviceState::created);

  auto again = catalog_->begin_delete(vol.id);
  ASSERT_TRUE(again);
  ASSERT_TRUE(catalog_->finish_delete(*again));
  auto after = catalog_->get_device(vol.id);
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().err, ENOENT);
}

TEST_F(CatalogTest, DeletingAnOriginKeepsItsSnapshotsWithoutOrigin) {
  auto vol = make("ws", DeviceKind::volume);
  auto snap = make("s1", DeviceKind::snapshot, vol.id);
  ASSERT_TRUE(catalog_->set_labels(snap.id, {{"k", "v"}}));
  auto del = catalog_->begin_delete(vol.id);
  ASSERT_TRUE(catalog_->finish_delete(*del));
  auto s = catalog_->get_device(snap.id);
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->origin_id);
  EXPECT_EQ(s->labels.at("k"), "v");
}

TEST_F(CatalogTest, NestedTransactionRollsBackEverything) {
  {
    auto sp = Savepoint::begin(catalog_->db());
    ASSERT_TRUE(sp);
    make("inside", DeviceKind::volume);
    // sp goes out of scope without commit: as if the agent failed mid-way.
  }
  EXPECT_FALSE(*catalog_->find_device(pool_.id, "inside"));
  EXPECT_EQ(catalog_->get_pool(pool_.id)->next_thin_id, 1u);
}

TEST_F(CatalogTest, DeviceRowsAreEveryRowOfThePoolWithWhatRecoveryDecidesOn) {
  auto vol = make("vol", DeviceKind::volume);
  auto snap = make("snap", DeviceKind::snapshot, vol.id);
  ASSERT_TRUE(catalog_->set_labels(snap.id, {{"k", "v"}}));
  auto creating = catalog_->begin_create({.pool_id = pool_.id,
                                          .name = "half",
                                          .kind = DeviceKind::clone,
                                          .origin_id = snap.id,
                                          .dm_name = "stepsnap-half"});
  ASSERT_TRUE(creating) << creating.error().message();
  auto gone = make("gone", DeviceKind::snapshot, vol.id);
  ASSERT_TRUE(catalog_->mark_faulty(gone.id, "missing"));
  auto other = catalog_->add_pool({"pool1", "/dev/loop2", "/dev/loop3", 65536});
  ASSERT_TRUE(other);
  auto theirs = catalog_->begin_create(
      {.pool_id = other->id, .name = "theirs", .kind = DeviceKind::volume, .size_bytes = 1});
  ASSERT_TRUE(theirs);

  auto rows = catalog_->device_rows(pool_.id);
  ASSERT_TRUE(rows) << rows.error().message();
  ASSERT_EQ(rows->size(), 4u);  // not the other pool's
  const auto& r = *rows;
  EXPECT_EQ(r[0].id, vol.id);
  EXPECT_EQ(r[0].kind, DeviceKind::volume);
  EXPECT_EQ(r[0].state, DeviceState::created);
  EXPECT_EQ(r[0].dm_name, "stepsnap-vol");
  EXPECT_EQ(r[1].name, "snap");
  EXPECT_EQ(r[1].kind, DeviceKind::snapshot);
  EXPECT_EQ(r[1].thin_id, snap.thin_id);
  EXPECT_EQ(r[2].id, creating->device_id);
  EXPECT_EQ(r[2].state, DeviceState::creating);
  EXPECT_EQ(r[2].thin_id, creating->thin_id);
  EXPECT_EQ(r[2].dm_name, "stepsnap-half");
  EXPECT_EQ(r[3].state, DeviceState::faulty);
}

TEST_F(CatalogTest, SetMappedBytesAndDmName) {
  auto vol = make("ws", DeviceKind::volume);
  ASSERT_TRUE(catalog_->set_mapped_bytes(vol.id, 77));
  ASSERT_TRUE(catalog_->set_dm_name(vol.id, "x"));
  auto d = catalog_->get_device(vol.id);
  EXPECT_EQ(d->mapped_bytes, 77u);
  EXPECT_EQ(d->dm_name, "x");
  EXPECT_EQ(catalog_->set_mapped_bytes(4242, 1).error().err, ENOENT);
}

// ---- schema version 2: steps and the pool's transaction id -----------------

StepRecord sample_step(const std::string& step = "train", const std::string& state = "running") {
  StepRecord r;
  r.pipeline = "kale";
  r.run = "r1";
  r.step = step;
  r.cgroup = "/sys/fs/cgroup/steps/" + step;
  r.cgroup_id = 4242;
  r.policy = "both";
  r.volumes = {"ws", "data"};
  r.command = "python train.py --epochs 3";
  r.labels = {{"team", "ml"}};
  r.state = state;
  r.registered_ns = 1'700'000'000'000'000'000;
  r.started_ns = r.registered_ns + 5;
  r.held_ns = 1234567;
  r.pre_snapshots = {"r1." + step + ".ws.pre", "r1." + step + ".data.pre"};
  return r;
}

TEST_F(CatalogTest, AVersion1CatalogMigratesKeepingItsPools) {
  // A catalog written by the previous agent: only migration 1 applied.
  TempDir old;
  {
    auto db = open_db(old.file("catalog.db"));
    ASSERT_TRUE(db->exec(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ns INTEGER NOT "
        "NULL)"));
    ASSERT_TRUE(db->exec(std::string(catalog_migrations().at(0))));
    ASSERT_TRUE(db->exec("INSERT INTO schema_migrations VALUES (1, 0)"));
    ASSERT_TRUE(db->exec(
        "INSERT INTO pools (name, data_device, metadata_device, block_bytes, next_thin_id, "
        "created_ns) VALUES ('old', '/dev/a', '/dev/b', 65536, 7, 1)"));
  }
  auto c = Catalog::open(open_db(old.file("catalog.db")));
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(*c->schema_version(), Catalog::latest_schema_version());
  auto pool = c->find_pool("old");
  ASSERT_TRUE(pool && *pool);
  EXPECT_EQ((*pool)->next_thin_id, 7u);
  EXPECT_FALSE((*pool)->transaction_id) << "never recorded by the old agent";
  auto steps = c->unfinished_steps();
  ASSERT_TRUE(steps) << steps.error().message();
  EXPECT_TRUE(steps->empty());
}

TEST_F(CatalogTest, TransactionIdRoundTripsAllSixtyFourBits) {
  EXPECT_FALSE(pool_.transaction_id);
  // dm's transaction id is unsigned; SQLite's integers are signed.
  const std::uint64_t txn = 0xFFFFFF0000000123ull;
  ASSERT_TRUE(catalog_->set_transaction_id(pool_.id, txn));
  reopen();
  EXPECT_EQ(pool_.transaction_id, txn);
  ASSERT_TRUE(catalog_->set_transaction_id(pool_.id, 5));
  EXPECT_EQ(catalog_->get_pool(pool_.id)->transaction_id, 5u);
  auto missing = catalog_->set_transaction_id(pool_.id + 100, 5);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().err, ENOENT);
}

TEST_F(CatalogTest, StepsSurviveReopenWithEveryField) {
  StepRecord r = sample_step();
  r.exit_status = 3;
  r.error = "post-snapshot failed: no space";
  r.finished_ns = r.started_ns + 99;
  r.state = "failed";
  r.post_snapshots = {"r1.train.ws.post"};
  ASSERT_TRUE(catalog_->save_step(r));
  reopen();
  auto found = catalog_->find_step("kale", "r1", "train");
  ASSERT_TRUE(found) << found.error().message();
  ASSERT_TRUE(*found);
  const StepRecord& g = **found;
  EXPECT_EQ(g.cgroup, r.cgroup);
  EXPECT_EQ(g.cgroup_id, r.cgroup_id);
  EXPECT_EQ(g.policy, "both");
  EXPECT_EQ(g.volumes, r.volumes);
  EXPECT_EQ(g.command, r.command);
  EXPECT_EQ(g.labels, r.labels);
  EXPECT_EQ(g.state, "failed");
  EXPECT_EQ(g.exit_status, 3);
  EXPECT_EQ(g.error, r.error);
  EXPECT_EQ(g.registered_ns, r.registered_ns);
  EXPECT_EQ(g.started_ns, r.started_ns);
  EXPECT_EQ(g.finished_ns, r.finished_ns);
  EXPECT_EQ(g.held_ns, r.held_ns);
  EXPECT_EQ(g.pre_snapshots, r.pre_snapshots);
  EXPECT_EQ(g.post_snapshots, r.post_snapshots);
  EXPECT_TRUE(g.terminal());
  auto none = catalog_->find_step("kale", "r1", "nope");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

TEST_F(CatalogTest, SavingAStepAgainUpdatesItsOneRow) {
  StepRecord r = sample_step("prep", "registered");
  r.started_ns = 0;
  ASSERT_TRUE(catalog_->save_step(r));
  auto first = *catalog_->find_step("kale", "r1", "prep");
  EXPECT_EQ(first->started_ns, 0) << "not started is kept as not started";
  EXPECT_FALSE(first->exit_status);
  for (const char* state : {"holding", "running", "finishing", "finished"}) {
    r.state = state;
    ASSERT_TRUE(catalog_->save_step(r)) << state;
  }
  r.exit_status = 0;
  ASSERT_TRUE(catalog_->save_step(r));
  auto run = catalog_->list_steps("kale", "r1");
  ASSERT_TRUE(run);
  ASSERT_EQ(run->size(), 1u);
  EXPECT_EQ((*run)[0].state, "finished");
  EXPECT_EQ((*run)[0].exit_status, 0);
}

TEST_F(CatalogTest, UnknownStateOrPolicyIsRefusedByTheSchema) {
  StepRecord bad = sample_step("x", "paused");
  auto r = catalog_->save_step(bad);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("kale/r1/x"), std::string::npos) << r.error().message();
  bad.state = "running";
  bad.policy = "sometimes";
  EXPECT_FALSE(catalog_->save_step(bad));
  EXPECT_FALSE(*catalog_->find_step("kale", "r1", "x"));
}

TEST_F(CatalogTest, UnfinishedStepsAreTheNonTerminalOnesOfEveryRun) {
  ASSERT_TRUE(catalog_->save_step(sample_step("a", "registered")));
  ASSERT_TRUE(catalog_->save_step(sample_step("b", "holding")));
  ASSERT_TRUE(catalog_->save_step(sample_step("c", "running")));
  ASSERT_TRUE(catalog_->save_step(sample_step("d", "finishing")));
  ASSERT_TRUE(catalog_->save_step(sample_step("e", "finished")));
  ASSERT_TRUE(catalog_->save_step(sample_step("f", "failed")));
  StepRecord other = sample_step("a", "running");
  other.run = "r2";
  ASSERT_TRUE(catalog_->save_step(other));
  auto open = catalog_->unfinished_steps();
  ASSERT_TRUE(open);
  std::vector<std::string> keys;
  for (const auto& s : *open) keys.push_back(s.run + "/" + s.step + ":" + s.state);
  EXPECT_EQ(keys, (std::vector<std::string>{"r1/a:registered", "r1/b:holding", "r1/c:running",
                                            "r1/d:finishing", "r2/a:running"}));
  EXPECT_EQ(catalog_->list_steps("kale", "r1")->size(), 6u);
  EXPECT_EQ(catalog_->list_steps("kale", "r2")->size(), 1u);
  EXPECT_TRUE(catalog_->list_steps("other", "r1")->empty());
}

TEST_F(CatalogTest, AStepRowRollsBackWithItsTransaction) {
  {
    auto sp = Savepoint::begin(catalog_->db());
    ASSERT_TRUE(sp);
    ASSERT_TRUE(catalog_->save_step(sample_step()));
    // no commit: the event it would have gone with did not happen either
  }
  EXPECT_FALSE(*catalog_->find_step("kale", "r1", "train"));
}

// Schema version 3 (issue #15): each device records who made it, and a
// run's clone is known by its run_clone column, never by name or labels.
TEST_F(CatalogTest, OwnerUidIsRecordedOnEveryDevice) {
  CreateSpec spec{.pool_id = pool_.id,
                  .name = "mine",
                  .kind = DeviceKind::volume,
                  .size_bytes = 1 << 20,
                  .owner_uid = 4711};
  auto intent = catalog_->begin_create(spec);
  ASSERT_TRUE(intent) << intent.error().message();
  ASSERT_TRUE(catalog_->finish_create(*intent, "pool0-vol-mine"));
  EXPECT_EQ(catalog_->get_device(intent->device_id)->owner_uid, 4711u);
  auto listed = catalog_->list_devices({});
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().owner_uid, 4711u);
  // The daemon's own devices (step snapshots) are root's.
  EXPECT_EQ(make("theirs", DeviceKind::volume).owner_uid, 0u);
}

TEST_F(CatalogTest, RunCloneIsFoundByItsColumnAndNeverByLabels) {
  auto vol = make("ws", DeviceKind::volume);
  auto snap = make("ws.s1", DeviceKind::snapshot, vol.id);
  const RunCloneKey key{"p", "r", "ws"};
  // A clone named and labelled exactly like the run's clone, made by a
  // group member through clone.create: not the run's clone.
  CreateSpec planted{.pool_id = pool_.id,
                     .name = "p.r.ws",
                     .kind = DeviceKind::clone,
                     .origin_id = snap.id,
                     .labels = {{"pipeline", "p"}, {"run", "r"}, {"volume", "ws"}},
                     .owner_uid = 4711};
  auto i1 = catalog_->begin_create(planted);
  ASSERT_TRUE(i1) << i1.error().message();
  ASSERT_TRUE(catalog_->finish_create(*i1, "pool0-vol-p.r.ws"));
  auto found = catalog_->find_run_clone(pool_.id, key);
  ASSERT_TRUE(found) << found.error().message();
  EXPECT_FALSE(*found) << "labels made a device a run's clone";

  CreateSpec real{.pool_id = pool_.id,
                  .name = "run-clone",
                  .kind = DeviceKind::clone,
                  .origin_id = snap.id,
                  .run_clone = key};
  auto i2 = catalog_->begin_create(real);
  ASSERT_TRUE(i2) << i2.error().message();
  ASSERT_TRUE(catalog_->finish_create(*i2, "pool0-vol-run-clone"));
  found = catalog_->find_run_clone(pool_.id, key);
  ASSERT_TRUE(found && *found);
  EXPECT_EQ((*found)->id, i2->device_id);
  ASSERT_TRUE((*found)->run_clone);
  EXPECT_EQ(*(*found)->run_clone, key);

  // One clone per run and volume: a second is refused before any kernel call.
  real.name = "run-clone-2";
  auto i3 = catalog_->begin_create(real);
  ASSERT_FALSE(i3);
  EXPECT_EQ(i3.error().err, EEXIST);
}

TEST(CatalogMigration, Version2DevicesBecomeRootsAndNoneIsARunClone) {
  TempDir dir;
  auto db = open_db(dir.file("catalog.db"));
  ASSERT_TRUE(db);
  // A catalog as stepsnapd at schema version 2 left it, with a clone that a
  // group member planted under a run clone's name and labels.
  const auto& migrations = catalog_migrations();
  ASSERT_GE(migrations.size(), 3u);
  ASSERT_TRUE(
      db->exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
               "applied_ns INTEGER NOT NULL)"));
  for (int v = 0; v < 2; ++v) {
    ASSERT_TRUE(db->exec(std::string(migrations[v])));
    ASSERT_TRUE(
        db->exec("INSERT INTO schema_migrations VALUES (" + std::to_string(v + 1) + ", 1)"));
  }
  ASSERT_TRUE(db->exec(
      "INSERT INTO pools (id, name, data_device, metadata_device, block_bytes, created_ns) "
      "VALUES (1, 'pool0', '/dev/a', '/dev/b', 65536, 1);"
      "INSERT INTO devices (id, pool_id, name, kind, thin_id, state, size_bytes, created_ns) "
      "VALUES (1, 1, 'p.r.ws', 'clone', 7, 'created', 1048576, 1);"
      "INSERT INTO labels VALUES (1, 'pipeline', 'p'), (1, 'run', 'r'), (1, 'volume', 'ws');"));
  auto c = Catalog::open(db);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(*c->schema_version(), Catalog::latest_schema_version());
  auto d = c->get_device(1);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->uuid.size(), 32u) << "version 4 gives rows from before a uuid";
  EXPECT_EQ(d->owner_uid, 0u) << "rows from before owners are root's (only root may delete)";
  EXPECT_FALSE(d->run_clone);
  auto found = c->find_run_clone(1, {"p", "r", "ws"});
  ASSERT_TRUE(found);
  EXPECT_FALSE(*found);
}

}  // namespace
}  // namespace stepsnap::agent
