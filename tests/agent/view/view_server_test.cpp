// The HTTP view against a real catalog file (SQLite, WAL) that a writer
// connection fills the way the daemon does, served on a real loopback TCP
// port and read with an HTTP client. No pool exists on this host: the pool
// status is reported as unavailable, which the pages must survive.
#include "agent/view/view_server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;
using testing::open_db;
using testing::TempDir;

class ViewServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = open_db(dir_.file("catalog.db"));
    auto c = Catalog::open(db_);
    ASSERT_TRUE(c) << c.error().message();
    catalog_.emplace(std::move(*c));
    auto events = EventLog::open(db_);
    ASSERT_TRUE(events);
    events_ = std::move(*events);
    auto pool = catalog_->add_pool({"pool0", "/dev/loop0", "/dev/loop1", 65536});
    ASSERT_TRUE(pool);
    pool_ = *pool;

    // A run of pipeline "train": prepare -> fit, one workspace volume.
    auto ws = make("workspace", DeviceKind::volume, {}, {}, {}, 1 << 20);
    initial_ = make("train.r1.workspace.initial", DeviceKind::snapshot, ws.id,
                    StepInfo{.pipeline = "train", .run = "r1", .phase = Phase::initial});
    auto clone = make("train.r1.workspace", DeviceKind::clone, initial_.id);
    (void)clone;
    pre_ = make("r1.prepare.workspace.pre", DeviceKind::snapshot, clone.id,
                StepInfo{.pipeline = "train",
                         .run = "r1",
                         .step = "prepare",
                         .phase = Phase::pre,
                         .command = "python3 prep.py"},
                {}, 0, 1 << 16);
    post_ = make("r1.prepare.workspace.post", DeviceKind::snapshot, clone.id,
                 StepInfo{.pipeline = "train",
                          .run = "r1",
                          .step = "prepare",
                          .phase = Phase::post,
                          .command = "python3 prep.py",
                          .exit_status = 0},
                 {{"note", "<script>alert(1)</script>"}, {"metric.accuracy", "0.93"}}, 0, 3 << 16);
    step("prepare", "finished", 0, {}, {pre_.name}, {post_.name});
    step("fit", "failed", 1, "prepare", {}, {});
  }

  void TearDown() override {
    if (view_) view_->stop();
  }

  DeviceRecord make(const std::string& name, DeviceKind kind, std::optional<std::int64_t> origin,
                    std::optional<StepInfo> info = {}, Labels labels = {}, std::uint64_t size = 0,
                    std::uint64_t mapped = 0) {
    CreateSpec spec{.pool_id = pool_.id,
                    .name = name,
                    .kind = kind,
                    .origin_id = origin,
                    .size_bytes = size,
                    .labels = std::move(labels),
                    .step = info};
    if (kind == DeviceKind::clone && name == "train.r1.workspace")
      spec.run_clone = RunCloneKey{"train", "r1", "workspace"};
    auto intent = catalog_->begin_create(spec);
    EXPECT_TRUE(intent) << intent.error().message();
    EXPECT_TRUE(catalog_->finish_create(*intent, "pool0-vol-" + name, mapped));
    auto d = catalog_->get_device(intent->device_id);
    json data = {{"name", name}, {"kind", std::string(to_string(kind))}};
    if (info) data["step"] = {{"phase", std::string(to_string(info->phase))}};
    if (kind == DeviceKind::snapshot) data["pause_ns"] = 2'000'000;
    EXPECT_TRUE(events_->append(kind == DeviceKind::snapshot ? EventType::snapshot_created
                                : kind == DeviceKind::clone  ? EventType::clone_created
                                                             : EventType::volume_created,
                                data));
    return *d;
  }

  void step(const std::string& name, const std::string& state, int exit_status,
            const std::string& after, std::vector<std::string> pre, std::vector<std::string> post) {
    StepRecord r;
    r.pipeline = "train";
    r.run = "r1";
    r.step = name;
    r.cgroup = "/sys/fs/cgroup/stepsnap/train/r1/" + name;
    r.command = "python3 " + name + ".py";
    r.state = state;
    r.exit_status = exit_status;
    r.registered_ns = 1'000'000'000;
    r.started_ns = 2'000'000'000;
    r.finished_ns = 4'500'000'000;
    r.held_ns = 3'000'000;
    r.pre_snapshots = std::move(pre);
    r.post_snapshots = std::move(post);
    if (!after.empty()) r.labels["stepsnap.after"] = after;
    r.labels["stepsnap.pipeline_file"] = "/home/ds/train pipeline.json";
    ASSERT_TRUE(catalog_->save_step(r));
    ASSERT_TRUE(events_->append(EventType::step_started, {{"step", name}, {"held_ns", 3'000'000}}));
    ASSERT_TRUE(events_->append(EventType::step_finished,
                                {{"step", name}, {"state", state}, {"exit_status", exit_status}}));
  }

  void start_view() {
    auto v = ViewServer::start(
        {.listen = {.host = "127.0.0.1", .port = 0, .loopback = true},
         .catalog_path = dir_.file("catalog.db"),
         .wait_for_event = [this](std::uint64_t since, std::chrono::milliseconds t) {
           events_->wait_for(since, t);
         }});
    ASSERT_TRUE(v) << v.error().message();
    view_ = std::move(*v);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", view_->port());
  }

  httplib::Result get(const std::string& path) { return client_->Get(path.c_str()); }

  TempDir dir_;
  std::shared_ptr<Database> db_;
  std::optional<Catalog> catalog_;
  std::unique_ptr<EventLog> events_;
  PoolRecord pool_;
  DeviceRecord initial_, pre_, post_;
  std::unique_ptr<ViewServer> view_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(ViewServerTest, RunsListNamesTheRunWithItsOutcome) {
  start_view();
  auto r = get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("href=\"/runs/train/r1\""), std::string::npos);
  EXPECT_NE(r->body.find("<td class=\"state failed\">failed</td>"), std::string::npos) << r->body;
  EXPECT_NE(r->get_header_value("Content-Security-Policy").find("script-src 'self';"),
            std::string::npos);
  // The handler's own time, for clients that tell it from the transfer's.
  std::string timing = r->get_header_value("Server-Timing");
  ASSERT_EQ(timing.rfind("app;dur=", 0), 0u) << timing;
  EXPECT_GE(std::stod(timing.substr(8)), 0.0);
}

// Steps the runner planned and never registered: after fit failed, evaluate
// (after fit) was skipped; report (after prepare) has not started. Run r2
// restored prepare from r1 and has not run fit yet.
TEST_F(ViewServerTest, PlannedStepsThatNeverRanAreSkippedRestoredOrPending) {
  ASSERT_TRUE(catalog_->save_run_plan({.pipeline = "train",
                                       .run = "r1",
                                       .steps = {{"prepare", {}},
                                                 {"fit", {"prepare"}},
                                                 {"evaluate", {"fit"}},
                                                 {"report", {"prepare"}}}}));
  ASSERT_TRUE(catalog_->save_run_plan({.pipeline = "train",
                                       .run = "r2",
                                       .steps = {{"prepare", {}}, {"fit", {"prepare"}}},
                                       .restored = {"prepare"},
                                       .restored_from = "r1"}));
  start_view();
  auto runs = get("/api/v1/runs");
  ASSERT_TRUE(runs);
  json all = json::parse(runs->body)["runs"];
  json r1, r2;
  for (const auto& r : all) (r["run"] == "r1" ? r1 : r2) = r;
  EXPECT_EQ(r1["steps_total"], 4);
  EXPECT_EQ(r1["steps_ok"], 1);
  EXPECT_EQ(r1["steps_failed"], 1);
  EXPECT_EQ(r1["steps_skipped"], 1);
  EXPECT_EQ(r1["steps_pending"], 1);
  EXPECT_EQ(r1["state"], "failed");
  EXPECT_EQ(r2["steps_restored"], 1);
  EXPECT_EQ(r2["steps_pending"], 1);
  EXPECT_EQ(r2["state"], "running");

  auto run = get("/api/v1/runs/train/r1");
  ASSERT_TRUE(run);
  json steps = json::parse(run->body)["steps"];
  std::map<std::string, json> by;
  for (const auto& s : steps) by[s["step"]] = s;
  EXPECT_EQ(by["evaluate"]["state"], "skipped");
  EXPECT_EQ(by["evaluate"]["because"], "fit");
  EXPECT_EQ(by["report"]["state"], "pending");
  EXPECT_EQ(by["report"]["after"], json::array({"prepare"}));

  auto list = get("/");
  ASSERT_TRUE(list);
  EXPECT_NE(list->body.find("<th>skipped</th><th>restored</th>"), std::string::npos);
  auto page = get("/runs/train/r2");
  ASSERT_TRUE(page);
  EXPECT_NE(page->body.find("not re-run: restored from run r1"), std::string::npos);
}

// The pool chart is drawn from the pool.usage events in the log, so it is
// there after a restart of the view (or of the daemon).
TEST_F(ViewServerTest, PoolChartComesFromTheEventLog) {
  for (double pct : {1.0, 2.5, 7.0}) {
    ASSERT_TRUE(
        events_->append(EventType::pool_usage,
                        {{"pool", "pool0"}, {"data_percent", pct}, {"metadata_percent", pct / 2}}));
  }
  start_view();
  auto page = get("/pool");
  ASSERT_TRUE(page);
  EXPECT_NE(page->body.find("id=\"use-chart\""), std::string::npos);
}

// An SSE message named `event: T` reaches only a listener for T: the live
// page's script must name every type the log has, new ones included.
TEST_F(ViewServerTest, TheLiveScriptListensForEveryEventType) {
  start_view();
  auto script = get("/static/live.js");
  ASSERT_TRUE(script);
  for (auto name : event_type_names())
    EXPECT_NE(script->body.find("'" + std::string(name) + "'"), std::string::npos) << name;
  EXPECT_NE(script->body.find("'events.truncated'"), std::string::npos);
}

TEST_F(ViewServerTest, RunPageDrawsTheGraphAndGivesRestoreCommands) {
  start_view();
  auto r = get("/runs/train/r1");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const std::string& b = r->body;
  // One arrow, prepare -> fit; the failed step drawn red, the good one green.
  EXPECT_NE(b.find("<line class=\"edge\" data-from=\"prepare\" data-to=\"fit\""),
            std::string::npos);
  EXPECT_NE(b.find("fill=\"#f4c7c3\""), std::string::npos);
  EXPECT_NE(b.find("fill=\"#c8e6c9\""), std::string::npos);
  EXPECT_NE(b.find("href=\"/snapshots/r1.prepare.workspace.post\""), std::string::npos);
  EXPECT_NE(b.find("2.50 s"), std::string::npos);  // duration
  EXPECT_NE(b.find("3.0 ms"), std::string::npos);  // hold
  EXPECT_NE(b.find("runner pipeline run &#39;/home/ds/train pipeline.json&#39; --restore r1 "
                   "--from-step prepare"),
            std::string::npos);
  EXPECT_NE(b.find("<td>accuracy</td><td>0.93</td>"), std::string::npos);
  EXPECT_NE(b.find("train.r1.workspace.initial"), std::string::npos);
  EXPECT_NE(b.find("train.r1.workspace"), std::string::npos);
}

TEST_F(ViewServerTest, SnapshotPageShowsEveryFieldLineageAndEscapesLabels) {
  start_view();
  auto r = get("/snapshots/r1.prepare.workspace.post");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const std::string& b = r->body;
  for (const char* field : {"pipeline", "run", "step", "phase", "command", "exit status", "created",
                            "source volume", "thin id", "size", "mapped", "parent", "lineage"}) {
    EXPECT_NE(b.find(std::string("<th>") + field + "</th>"), std::string::npos) << field;
  }
  EXPECT_NE(b.find("<ol id=\"lineage\"><li><a href=\"/snapshots/r1.prepare.workspace.pre\">"),
            std::string::npos);
  // post mapped 192 KiB, its parent 64 KiB.
  EXPECT_NE(b.find("(131072 bytes;"), std::string::npos);
  EXPECT_EQ(b.find("<script>alert(1)</script>"), std::string::npos);
  EXPECT_NE(b.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
}

TEST_F(ViewServerTest, UnknownRunAndSnapshotAre404PagesNamingThem) {
  start_view();
  auto run = get("/runs/train/nope");
  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, 404);
  EXPECT_NE(run->body.find("No run <code>train/nope</code>"), std::string::npos) << run->body;
  auto snap = get("/snapshots/%3Cb%3Ex");
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->status, 404);
  EXPECT_NE(snap->body.find("No snapshot <code>&lt;b&gt;x</code>"), std::string::npos);
  auto api = get("/api/v1/snapshots/nope");
  ASSERT_TRUE(api);
  EXPECT_EQ(api->status, 404);
  EXPECT_EQ(json::parse(api->body)["error"]["code"], "not_found");
}

TEST_F(ViewServerTest, JsonApiMirrorsTheReadOps) {
  start_view();
  auto runs = get("/api/v1/runs");
  ASSERT_TRUE(runs);
  auto rj = json::parse(runs->body);
  ASSERT_EQ(rj["runs"].size(), 1u);
  EXPECT_EQ(rj["runs"][0]["steps_failed"], 1);
  EXPECT_EQ(rj["runs"][0]["steps_ok"], 1);
  auto run = json::parse(get("/api/v1/runs/train/r1")->body);
  EXPECT_EQ(run["steps"].size(), 2u);
  EXPECT_EQ(run["initial_snapshots"][0]["name"], "train.r1.workspace.initial");
  EXPECT_EQ(run["run_clones"][0]["name"], "train.r1.workspace");
  EXPECT_EQ(run["metrics"]["accuracy"], "0.93");
  auto step = json::parse(get("/api/v1/runs/train/r1/steps/fit")->body);
  EXPECT_EQ(step["state"], "failed");
  EXPECT_EQ(step["after"], json::array({"prepare"}));
  auto snap = json::parse(get("/api/v1/snapshots/r1.prepare.workspace.post")->body);
  EXPECT_EQ(snap["parent"], "r1.prepare.workspace.pre");
  EXPECT_EQ(snap["origin"], "train.r1.workspace");
  EXPECT_EQ(snap["origin_snapshot"], "train.r1.workspace.initial");
  auto list = json::parse(get("/api/v1/snapshots?step=prepare&pipeline=train&run=r1")->body);
  EXPECT_EQ(list["snapshots"].size(), 2u);
  auto vols = json::parse(get("/api/v1/volumes")->body);
  EXPECT_EQ(vols["volumes"].size(), 2u);  // workspace and its run clone
  EXPECT_EQ(vols["volumes"][1]["origin"], "train.r1.workspace.initial");
  auto pipelines = json::parse(get("/api/v1/pipelines")->body);
  EXPECT_EQ(pipelines["pipelines"][0]["name"], "train");
  auto ev = json::parse(get("/api/v1/events?since=2&max=3")->body);
  ASSERT_EQ(ev["events"].size(), 3u);
  EXPECT_EQ(ev["events"][0]["seq"], 3);
  EXPECT_EQ(get("/api/v1/events?since=x")->status, 400);
}

TEST_F(ViewServerTest, NoRequestWrites) {
  start_view();
  auto before = catalog_->list_devices();
  auto post = client_->Post("/api/v1/volumes", "{\"name\":\"x\"}", "application/json");
  ASSERT_TRUE(post);
  EXPECT_GE(post->status, 400);
  auto del = client_->Delete("/api/v1/snapshots/r1.prepare.workspace.post");
  ASSERT_TRUE(del);
  EXPECT_GE(del->status, 400);
  EXPECT_EQ(catalog_->list_devices()->size(), before->size());
}

TEST_F(ViewServerTest, PagesAnswerWhileTheWriterHoldsATransaction) {
  start_view();
  // What snapshot work does across a hold: a savepoint open on the daemon's
  // connection, its mutex held. The view reads through its own connection.
  auto sp = Savepoint::begin(*db_);
  ASSERT_TRUE(sp);
  auto r = get("/runs/train/r1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// Reads an SSE stream until `want` events arrived; returns their ids.
std::vector<std::uint64_t> read_sse(int port, const std::string& last_event_id, std::size_t want,
                                    std::function<void()> after_connect = {}) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(std::chrono::seconds(20));
  httplib::Headers headers;
  if (!last_event_id.empty()) headers.emplace("Last-Event-ID", last_event_id);
  std::vector<std::uint64_t> ids;
  std::string buffer;
  bool connected = false;
  c.Get("/events", headers, [&](const char* data, std::size_t n) {
    if (!connected && after_connect) {
      connected = true;
      std::thread(after_connect).detach();
    }
    buffer.append(data, n);
    std::size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      std::string msg = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (msg.rfind("id: ", 0) == 0) ids.push_back(std::stoull(msg.substr(4)));
    }
    return ids.size() < want;
  });
  return ids;
}

TEST_F(ViewServerTest, ServerSentEventsResumeFromLastEventIdWithoutAGap) {
  start_view();
  const std::uint64_t last = events_->last_seq();
  ASSERT_GE(last, 8u);
  // A browser that saw up to 5 reconnects: it gets 6.. with no gap.
  auto ids = read_sse(view_->port(), "5", last - 5);
  ASSERT_EQ(ids.size(), last - 5);
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], 6 + i);
  // Live: events committed while the stream is open arrive in order.
  auto live = read_sse(view_->port(), std::to_string(last), 3, [this] {
    for (int i = 0; i < 3; ++i) (void)events_->append(EventType::error, {{"op", "test"}});
  });
  EXPECT_EQ(live, (std::vector<std::uint64_t>{last + 1, last + 2, last + 3}));
  auto bad = get("/events?since=999999");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

TEST_F(ViewServerTest, MetricsCountSnapshotsStepsAndHolds) {
  start_view();
  // The tail reads the log on its own thread: wait until it caught up.
  std::string body;
  for (int i = 0; i < 100; ++i) {
    body = get("/metrics")->body;
    if (body.find("stepsnap_events_last_seq " + std::to_string(events_->last_seq())) !=
        std::string::npos)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(body.find("stepsnap_snapshots_created_total{phase=\"post\"} 1"), std::string::npos)
      << body;
  EXPECT_NE(body.find("stepsnap_snapshots_created_total{phase=\"initial\"} 1"), std::string::npos);
  EXPECT_NE(body.find("stepsnap_clones_created_total 1"), std::string::npos);
  EXPECT_NE(body.find("stepsnap_snapshot_pause_seconds_bucket{le=\"0.0025\"} 3"),
            std::string::npos);
  EXPECT_NE(body.find("stepsnap_step_hold_seconds_count 2"), std::string::npos);
  EXPECT_NE(body.find("stepsnap_steps{state=\"failed\"} 1"), std::string::npos);
  EXPECT_NE(body.find("stepsnap_steps_finished_total{state=\"failed\"} 1"), std::string::npos);
  // The exposition format as Prometheus' own linter reads it (Debian's
  // prometheus package, installed by scripts/setup).
  const std::string file = dir_.file("metrics.txt");
  std::ofstream(file) << body;
  const std::string cmd = "promtool check metrics < " + file + " > " + file + ".out 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream out(file + ".out");
  std::stringstream said;
  said << out.rdbuf();
  EXPECT_EQ(rc, 0) << said.str();
}

// ---- pages of lists ---------------------------------------------------------

// The next-page link of a list page, as a browser would follow it (the
// page escapes & as &amp;); empty when there is none.
std::string next_link(const std::string& body) {
  std::smatch m;
  if (!std::regex_search(body, m, std::regex("<a id=\"next-page\" href=\"([^\"]*)\">"))) return "";
  std::string href = m[1];
  for (std::size_t at; (at = href.find("&amp;")) != std::string::npos;) href.replace(at, 5, "&");
  return href;
}

// Runs written straight into the catalog: one step each, registered at t.
void add_run(Catalog& catalog, const std::string& run, std::int64_t t) {
  StepRecord r;
  r.pipeline = "train";
  r.run = run;
  r.step = "only";
  r.cgroup = "/sys/fs/cgroup/stepsnap/x";
  r.state = "finished";
  r.exit_status = 0;
  r.registered_ns = t;
  ASSERT_TRUE(catalog.save_step(r));
}

// Newest first: r2 (t=3 s), r&<x> (2 s), r1 (1 s, the fixture's run). With
// two a page, the first page ends at the run whose name needs escaping.
TEST_F(ViewServerTest, RunsListLongerThanAPageLinksToTheRestEscaped) {
  add_run(*catalog_, "r2", 3'000'000'000);
  add_run(*catalog_, "r&<x>", 2'000'000'000);
  start_view();
  auto first = get("/?limit=2");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 200);
  EXPECT_NE(first->body.find("href=\"/runs/train/r2\""), std::string::npos);
  EXPECT_NE(first->body.find("href=\"/runs/train/r%26%3Cx%3E\">r&amp;&lt;x&gt;</a>"),
            std::string::npos)
      << first->body;
  EXPECT_EQ(first->body.find("href=\"/runs/train/r1\""), std::string::npos);
  EXPECT_NE(
      first->body.find(
          "<a id=\"next-page\" href=\"/?limit=2&amp;after=train%2Fr%26%3Cx%3E\">next page</a>"),
      std::string::npos)
      << first->body;
  auto rest = get(next_link(first->body));
  ASSERT_TRUE(rest);
  ASSERT_EQ(rest->status, 200);
  EXPECT_NE(rest->body.find("href=\"/runs/train/r1\""), std::string::npos) << rest->body;
  EXPECT_EQ(rest->body.find("href=\"/runs/train/r2\""), std::string::npos);
  EXPECT_EQ(next_link(rest->body), "");
  // Without a limit the HTML page holds all three.
  auto all = get("/");
  ASSERT_TRUE(all);
  EXPECT_EQ(next_link(all->body), "");
  EXPECT_NE(all->body.find("href=\"/runs/train/r1\""), std::string::npos);

  // The JSON API pages alike, as the socket API does.
  auto page = json::parse(get("/api/v1/runs?limit=2")->body);
  ASSERT_EQ(page["runs"].size(), 2u);
  EXPECT_EQ(page["runs"][0]["run"], "r2");
  EXPECT_EQ(page["next_after"], "train/r&<x>");
  page = json::parse(get("/api/v1/runs?limit=2&after=train%2Fr%26%3Cx%3E")->body);
  ASSERT_EQ(page["runs"].size(), 1u);
  EXPECT_EQ(page["runs"][0]["run"], "r1");
  EXPECT_FALSE(page.contains("next_after"));
  auto grouped = json::parse(get("/api/v1/pipelines?limit=1")->body);
  EXPECT_EQ(grouped["pipelines"][0]["runs"].size(), 1u);
  EXPECT_EQ(grouped["next_after"], "train/r2");

  // Positions and sizes that are wrong say so, escaped.
  auto gone = get("/?after=train%2F%3Cgone%3E");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404);
  EXPECT_NE(gone->body.find("<code>train/&lt;gone&gt;</code>"), std::string::npos) << gone->body;
  auto bad = get("/?after=%3Cb%3E");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("&lt;b&gt;"), std::string::npos);
  EXPECT_EQ(bad->body.find("<b>"), std::string::npos);
  EXPECT_EQ(get("/?limit=0")->status, 400);
  auto api_gone = get("/api/v1/runs?after=train%2Fgone");
  EXPECT_EQ(api_gone->status, 404);
  EXPECT_EQ(json::parse(api_gone->body)["error"]["code"], "not_found");
  EXPECT_EQ(json::parse(get("/api/v1/runs?limit=10001")->body)["error"]["code"], "invalid_value");
}

// The pool page's volumes and the JSON lists: following next pages from
// the first gives every device once, in id order.
TEST_F(ViewServerTest, VolumesAndSnapshotsListsPageToTheEnd) {
  make("v&<1>", DeviceKind::volume, {}, {}, {}, 1 << 20);
  make("zz", DeviceKind::volume, {}, {}, {}, 1 << 20);
  start_view();
  std::vector<std::string> seen;
  std::string href = "/pool?limit=1";
  std::vector<std::string> hrefs;
  for (int pages = 0; !href.empty() && pages < 10; ++pages) {
    auto r = get(href);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << href;
    std::smatch m;
    std::string body = r->body;
    std::regex row("<tr><td>([^<]*)</td><td>(volume|clone)</td>");
    for (std::sregex_iterator it(body.begin(), body.end(), row), end; it != end; ++it)
      seen.push_back((*it)[1]);
    href = next_link(body);
    hrefs.push_back(href);
  }
  EXPECT_EQ(seen,
            (std::vector<std::string>{"workspace", "train.r1.workspace", "v&amp;&lt;1&gt;", "zz"}));
  EXPECT_EQ(hrefs, (std::vector<std::string>{"/pool?limit=1&after=workspace",
                                             "/pool?limit=1&after=train.r1.workspace",
                                             "/pool?limit=1&after=v%26%3C1%3E", ""}));

  std::vector<std::string> names;
  std::string after;
  for (int pages = 0; pages < 10; ++pages) {
    auto r = get("/api/v1/snapshots?limit=2" + (after.empty() ? "" : "&after=" + after));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    auto page = json::parse(r->body);
    EXPECT_LE(page["snapshots"].size(), 2u);
    for (const auto& d : page["snapshots"]) names.push_back(d["name"]);
    if (!page.contains("next_after")) break;
    after = page["next_after"];
  }
  EXPECT_EQ(names,
            (std::vector<std::string>{"train.r1.workspace.initial", "r1.prepare.workspace.pre",
                                      "r1.prepare.workspace.post"}));
  auto vols = json::parse(get("/api/v1/volumes?limit=3")->body);
  EXPECT_EQ(vols["volumes"].size(), 3u);
  EXPECT_EQ(vols["next_after"], "v&<1>");
  EXPECT_EQ(get("/api/v1/volumes?after=nope")->status, 404);
  EXPECT_EQ(get("/api/v1/snapshots?limit=x")->status, 400);
}

// Why the run page was slow (docs/benchmarks.md): it read every snapshot's
// labels and step record with two statements each, and listed every clone
// of the pool. Now a run's read costs no more statements for 40 steps with
// 80 snapshots, next to 30 clones of other runs, than for one step.
TEST_F(ViewServerTest, ARunsReadPreparesTheSameStatementsWhateverItsSteps) {
  auto clone = catalog_->find_device(pool_.id, "train.r1.workspace");
  ASSERT_TRUE(clone && *clone);
  for (int i = 0; i < 40; ++i) {
    std::string s = "s" + std::to_string(i);
    for (Phase phase : {Phase::pre, Phase::post})
      make("big." + s + "." + std::string(to_string(phase)), DeviceKind::snapshot, (*clone)->id,
           StepInfo{.pipeline = "train", .run = "big", .step = s, .phase = phase}, {{"k", "v"}});
  }
  for (int i = 0; i < 30; ++i) make("other-clone-" + std::to_string(i), DeviceKind::clone, pre_.id);
  auto store = ViewStore::open(dir_.file("catalog.db"));
  ASSERT_TRUE(store) << store.error().message();
  std::size_t statements = 0;
  (*store)->db().on_prepare([&](const std::string&) { ++statements; });
  auto small = (*store)->run("train", "r1");
  ASSERT_TRUE(small) << small.error().message();
  const std::size_t for_small = statements;
  statements = 0;
  auto big = (*store)->run("train", "big");
  ASSERT_TRUE(big) << big.error().message();
  EXPECT_EQ((*big)["steps"].size(), 40u);
  EXPECT_EQ((*big)["steps"][0]["snapshots"].size(), 2u);
  EXPECT_EQ((*big)["steps"][0]["snapshots"][0]["labels"]["k"], "v");
  // r1 has a run clone to read, big none: big may cost less, never more.
  EXPECT_LE(statements, for_small);
  EXPECT_LE(statements, 10u);
  (*store)->db().on_prepare({});
}

}  // namespace
}  // namespace stepsnap::agent
