#include "agent/catalog/catalog_schema.h"

namespace stepsnap::agent {

namespace {

// Version 1. CHECK constraints repeat the enums of catalog.h so that a bug in
// the agent cannot write a state recovery would not understand.
constexpr std::string_view kV1 = R"sql(
CREATE TABLE pools (
  id              INTEGER PRIMARY KEY,
  name            TEXT NOT NULL UNIQUE,
  data_device     TEXT NOT NULL,
  metadata_device TEXT NOT NULL,
  block_bytes     INTEGER NOT NULL CHECK (block_bytes > 0),
  -- next thin id to hand out; only ever grows (ids are never reused)
  next_thin_id    INTEGER NOT NULL DEFAULT 1 CHECK (next_thin_id BETWEEN 0 AND 16777216),
  created_ns      INTEGER NOT NULL
);

CREATE TABLE devices (
  id           INTEGER PRIMARY KEY,
  pool_id      INTEGER NOT NULL REFERENCES pools(id) ON DELETE RESTRICT,
  name         TEXT NOT NULL,
  kind         TEXT NOT NULL CHECK (kind IN ('volume', 'snapshot', 'clone')),
  thin_id      INTEGER NOT NULL CHECK (thin_id BETWEEN 0 AND 16777215),
  origin_id    INTEGER REFERENCES devices(id) ON DELETE SET NULL,
  parent_id    INTEGER REFERENCES devices(id) ON DELETE SET NULL,
  state        TEXT NOT NULL CHECK (state IN ('creating', 'created', 'deleting', 'faulty')),
  dm_name      TEXT NOT NULL DEFAULT '',
  size_bytes   INTEGER NOT NULL CHECK (size_bytes >= 0),
  mapped_bytes INTEGER NOT NULL DEFAULT 0 CHECK (mapped_bytes >= 0),
  created_ns   INTEGER NOT NULL,
  fault        TEXT NOT NULL DEFAULT '',
  UNIQUE (pool_id, name),
  UNIQUE (pool_id, thin_id)
);
CREATE INDEX devices_origin ON devices(origin_id);

CREATE TABLE labels (
  device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
  key       TEXT NOT NULL,
  value     TEXT NOT NULL,
  PRIMARY KEY (device_id, key)
);

CREATE TABLE step_snapshots (
  device_id   INTEGER PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
  pipeline    TEXT NOT NULL,
  run         TEXT NOT NULL,
  step        TEXT NOT NULL,
  phase       TEXT NOT NULL CHECK (phase IN ('initial', 'pre', 'post')),
  command     TEXT NOT NULL DEFAULT '',
  exit_status INTEGER
);
CREATE INDEX step_snapshots_run ON step_snapshots(pipeline, run, step);

-- The intent log: one row per kernel operation, written before the call.
-- device_id is kept as a plain integer (no foreign key) so the history of a
-- deleted device survives it.
CREATE TABLE operations (
  id          INTEGER PRIMARY KEY,
  pool_id     INTEGER NOT NULL REFERENCES pools(id),
  kind        TEXT NOT NULL CHECK (kind IN ('create', 'remove')),
  device_id   INTEGER,
  device_name TEXT NOT NULL,
  thin_id     INTEGER NOT NULL,
  state       TEXT NOT NULL CHECK (state IN
                ('pending', 'done', 'failed', 'rolled_back', 'completed_by_recovery')),
  started_ns  INTEGER NOT NULL,
  finished_ns INTEGER,
  detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX operations_pending ON operations(pool_id) WHERE state = 'pending';

-- The event log (event_log.h). seq is assigned by the agent, never reused:
-- event_seq keeps the last one handed out even after old rows are pruned.
CREATE TABLE events (
  seq     INTEGER PRIMARY KEY,
  type    TEXT NOT NULL,
  time_ns INTEGER NOT NULL,
  body    TEXT NOT NULL
);
CREATE TABLE event_seq (
  one  INTEGER PRIMARY KEY CHECK (one = 1),
  last INTEGER NOT NULL
);
INSERT INTO event_seq (one, last) VALUES (1, 0);
)sql";

// Version 2: registered steps survive a restart, and the pool's transaction
// id is remembered so that a pool changed behind the agent's back is noticed
// at the next start (dm/thin_pool.h, stale_view).
constexpr std::string_view kV2 = R"sql(
-- NULL until the agent first records it (catalogs older than version 2).
ALTER TABLE pools ADD COLUMN transaction_id INTEGER;

-- One row per registered step, written at every state change (with the
-- event that reports it, where there is one). volumes, labels and the
-- snapshot name lists are JSON arrays/objects: they are read whole, never
-- queried by element.
CREATE TABLE steps (
  id             INTEGER PRIMARY KEY,
  pipeline       TEXT NOT NULL,
  run            TEXT NOT NULL,
  step           TEXT NOT NULL,
  cgroup         TEXT NOT NULL,
  cgroup_id      INTEGER NOT NULL DEFAULT 0,
  policy         TEXT NOT NULL CHECK (policy IN ('pre', 'post', 'both', 'none')),
  volumes        TEXT NOT NULL DEFAULT '[]',
  command        TEXT NOT NULL DEFAULT '',
  labels         TEXT NOT NULL DEFAULT '{}',
  state          TEXT NOT NULL CHECK (state IN
                   ('registered', 'holding', 'running', 'finishing', 'finished', 'failed')),
  exit_status    INTEGER,
  error          TEXT NOT NULL DEFAULT '',
  registered_ns  INTEGER NOT NULL,
  started_ns     INTEGER,
  finished_ns    INTEGER,
  held_ns        INTEGER NOT NULL DEFAULT 0 CHECK (held_ns >= 0),
  pre_snapshots  TEXT NOT NULL DEFAULT '[]',
  post_snapshots TEXT NOT NULL DEFAULT '[]',
  UNIQUE (pipeline, run, step)
);
CREATE INDEX steps_unfinished ON steps(state) WHERE state NOT IN ('finished', 'failed');
)sql";

// Version 3: least privilege (docs/security.md). Every device records the
// uid of the peer that made it (root, 0, for what the daemon makes itself
// and for rows older than this version: the safe default, since only root
// may then delete them). A run's clone is identified by run_clone
// ("<pipeline>/<run>/<volume>": names never contain '/'), which only
// run.clone sets: labels are the caller's to choose, so a clone labelled
// like a run's clone is still not one. Clones made before this version have
// no run_clone and are not taken for any run's.
constexpr std::string_view kV3 = R"sql(
ALTER TABLE devices ADD COLUMN owner_uid INTEGER NOT NULL DEFAULT 0 CHECK (owner_uid >= 0);
ALTER TABLE devices ADD COLUMN run_clone TEXT;
CREATE UNIQUE INDEX devices_run_clone ON devices(run_clone) WHERE run_clone IS NOT NULL;
)sql";

// Version 4: snapshots that travel (docs/send-receive.md). Every device gets
// a uuid at creation, the identity a send stream names its snapshot and its
// base by: thin ids and names are local to a pool, a uuid is kept by
// receive, so an incremental stream can prove its base is the same snapshot
// on the other node. Rows from before get a random one now. received_from
// (JSON: source node, pool, name, parent uuid) is set only on a snapshot
// made by receive.
constexpr std::string_view kV4 = R"sql(
ALTER TABLE devices ADD COLUMN uuid TEXT;
UPDATE devices SET uuid = lower(hex(randomblob(16))) WHERE uuid IS NULL;
CREATE UNIQUE INDEX devices_uuid ON devices(uuid);
ALTER TABLE devices ADD COLUMN received_from TEXT;
)sql";

// Version 5: a run's plan (catalog.h, RunPlanRecord), written with the run
// by run.create; steps and restored are JSON, read whole. And the event
// log read by type (the view's pool chart reads the pool.usage events
// newest first) without a scan of every event.
constexpr std::string_view kV5 = R"sql(
CREATE TABLE run_plans (
  pipeline      TEXT NOT NULL,
  run           TEXT NOT NULL,
  steps         TEXT NOT NULL DEFAULT '[]',
  restored      TEXT NOT NULL DEFAULT '[]',
  restored_from TEXT NOT NULL DEFAULT '',
  created_ns    INTEGER NOT NULL,
  PRIMARY KEY (pipeline, run)
);
CREATE INDEX events_by_type ON events(type, seq);
)sql";

// Version 6: indexes for a catalog of 100,000 snapshots (docs/benchmarks.md,
// scale). Every read the API pages through (snapshot.list, volume.list by
// kind; a run's snapshots through step_snapshots_run) is then a SEARCH of an
// index in id order, never a SCAN of devices: tests/agent/catalog prove it
// with EXPLAIN QUERY PLAN. The index holds the rowid, so "id > after ORDER BY
// id LIMIT n" reads n entries.
constexpr std::string_view kV6 = R"sql(
CREATE INDEX devices_pool_kind ON devices(pool_id, kind);
)sql";

}  // namespace

const std::vector<std::string_view>& catalog_migrations() {
  static const std::vector<std::string_view> migrations = {kV1, kV2, kV3, kV4, kV5, kV6};
  return migrations;
}

}  // namespace stepsnap::agent
