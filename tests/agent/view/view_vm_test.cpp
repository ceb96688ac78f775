// The HTTP view of a real stepsnapd in the scripts/vm guest (label vm):
// after a real pipeline run on a real pool, the pages show the run, its
// graph and snapshots; /metrics passes promtool and a real Prometheus
// scrapes the pool's use from it; /events resumes from Last-Event-ID; the
// view can be turned off; an exposed address is warned about.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::testing {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kExample = std::string(STEPSNAP_SOURCE_DIR) + "/examples/house-prices";

class ViewVm : public StepsnapdFixture {
 protected:
  void SetUp() override {
    // The guest's init does not bring loopback up; TCP to 127.0.0.1 needs it.
    sh("ip link set lo up");
    StepsnapdFixture::SetUp();
  }

  void run_example(const std::string& run, const std::string& extra = "") {
    std::vector<std::pair<std::string, std::string>> code;
    for (const auto& f : fs::directory_iterator(kExample + "/steps"))
      if (f.path().extension() == ".py")
        code.emplace_back("steps/" + f.path().filename().string(), read_file(f.path()));
    make_volume("ws", code);
    auto csv = sh("python3 " + kExample + "/make_data.py " + dir_ + "/houses.csv");
    ASSERT_EQ(csv.rc, 0) << csv.err;
    make_volume("data", {{"houses.csv", read_file(dir_ + "/houses.csv")}});
    auto out = sh(std::string(RUNNER_PATH) + " pipeline run " + kExample +
                  "/pipeline.json --agent " + socket_ + " --run " + run + " " + extra);
    ASSERT_EQ(out.rc, 0) << out.out << out.err;
  }

  httplib::Result get(const std::string& path) {
    httplib::Client c("127.0.0.1", http_port());
    c.set_read_timeout(std::chrono::seconds(30));
    return c.Get(path.c_str());
  }

  std::string body(const std::string& path, int status = 200) {
    auto r = get(path);
    if (!r) {
      ADD_FAILURE() << "GET " << path << ": no answer (" << httplib::to_string(r.error()) << ")";
      return "";
    }
    EXPECT_EQ(r->status, status) << path << "\n" << r->body;
    return r->body;
  }
};

TEST_F(ViewVm, PagesShowARealRunItsGraphSnapshotsAndThePool) {
  ASSERT_GT(http_port(), 0) << read_file(log_path());
  fs::create_directories(dir_ + "/kfp");
  ASSERT_NO_FATAL_FAILURE(run_example("r1", "--kfp-ui-metadata " + dir_ + "/kfp"));

  std::string runs = body("/");
  EXPECT_NE(runs.find("href=\"/runs/house-prices/r1\""), std::string::npos) << runs;

  std::string run = body("/runs/house-prices/r1");
  for (const char* edge :
       {"data-from=\"read_data\" data-to=\"preprocess\"",
        "data-from=\"preprocess\" data-to=\"train\"", "data-from=\"train\" data-to=\"evaluate\""})
    EXPECT_NE(run.find(edge), std::string::npos) << edge;
  EXPECT_NE(
      run.find("runner pipeline run " + kExample + "/pipeline.json --restore r1 --from-step train"),
      std::string::npos)
      << run;
  json train = ok("step.status", {{"pipeline", "house-prices"}, {"run", "r1"}, {"step", "train"}});
  std::string post = train["post_snapshots"][0];
  std::string pre = train["pre_snapshots"][0];
  EXPECT_NE(run.find("href=\"/snapshots/" + post + "\""), std::string::npos);

  // The snapshot page: every field, and its lineage back to train's pre.
  std::string snap = body("/snapshots/" + post);
  json api = json::parse(body("/api/v1/snapshots/" + post));
  json sock = ok("snapshot.show", {{"name", post}});
  for (const char* k : {"name", "thin_id", "size_bytes", "parent", "lineage", "origin"})
    EXPECT_EQ(api[k], sock[k]) << k;
  EXPECT_EQ(api["parent"], pre);
  EXPECT_NE(snap.find("<th>thin id</th><td>" + sock["thin_id"].dump() + "</td>"),
            std::string::npos);
  EXPECT_NE(snap.find("<ol id=\"lineage\"><li><a href=\"/snapshots/" + pre + "\">"),
            std::string::npos)
      << snap;

  // The KFP Visualizations file names the same snapshots.
  json kfp = json::parse(read_file(dir_ + "/kfp/train/mlpipeline-ui-metadata.json"));
  std::string md = kfp["outputs"][0]["source"];
  EXPECT_NE(md.find("/snapshots/" + post + ")"), std::string::npos) << md;
  EXPECT_NE(md.find("/snapshots/" + pre + ")"), std::string::npos) << md;

  // The pool: real use from the kernel.
  json pool = json::parse(body("/api/v1/pool"));
  ASSERT_TRUE(pool.contains("status")) << pool.dump();
  EXPECT_GT(pool["status"]["used_data_blocks"].get<long>(), 0);
  std::string pool_page = body("/pool");
  EXPECT_NE(pool_page.find("Pool " + pool_), std::string::npos);

  // Unknown names: 404 pages saying what was looked for.
  EXPECT_NE(body("/runs/house-prices/nope", 404).find("No run <code>house-prices/nope</code>"),
            std::string::npos);
  EXPECT_NE(body("/snapshots/nope", 404).find("No snapshot <code>nope</code>"), std::string::npos);
}

TEST_F(ViewVm, MetricsPassPromtoolAndARealPrometheusScrapesThePoolsUse) {
  ASSERT_NO_FATAL_FAILURE(run_example("r1"));
  std::string metrics;
  for (int i = 0; i < 100; ++i) {  // the event tail catches up on its thread
    metrics = body("/metrics");
    if (metrics.find("stepsnap_steps_finished_total{state=\"finished\"} 4") != std::string::npos)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(metrics.find("stepsnap_steps_finished_total{state=\"finished\"} 4"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("stepsnap_snapshots_created_total{phase=\"post\"} 8"), std::string::npos);
  EXPECT_NE(metrics.find("stepsnap_step_hold_seconds_count 4"), std::string::npos);
  EXPECT_NE(metrics.find("stepsnap_api_requests_total{op=\"step.register\",result=\"ok\"} 4"),
            std::string::npos);
  std::ofstream(dir_ + "/metrics.txt") << metrics;
  auto check = sh("promtool check metrics < " + dir_ + "/metrics.txt");
  EXPECT_EQ(check.rc, 0) << check.out << check.err;

  json pool = json::parse(body("/api/v1/pool"));
  const long used =
      pool["status"]["used_data_blocks"].get<long>() * pool["block_bytes"].get<long>();
  ASSERT_GT(used, 0);

  // A real Prometheus on loopback, scraping the view every second.
  const int prom_port = 19090;
  std::ofstream(dir_ + "/prometheus.yml")
      << "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: stepsnapd\n"
      << "    static_configs: [{targets: ['127.0.0.1:" << http_port() << "']}]\n";
  std::string prom = "prometheus --config.file=" + dir_ +
                     "/prometheus.yml --storage.tsdb.path=" + dir_ +
                     "/tsdb --web.listen-address=127.0.0.1:" + std::to_string(prom_port);
  sh("(" + prom + " > " + dir_ + "/prometheus.log 2>&1 & echo $! > " + dir_ + "/prometheus.pid)");
  std::string value;
  for (int i = 0; i < 240 && value.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    httplib::Client c("127.0.0.1", prom_port);
    auto r = c.Get("/api/v1/query?query=stepsnap_pool_data_used_bytes");
    if (!r || r->status != 200) continue;
    auto j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || j["data"]["result"].empty()) continue;
    value = j["data"]["result"][0]["value"][1];
  }
  sh("kill $(cat " + dir_ + "/prometheus.pid); sleep 1");
  ASSERT_FALSE(value.empty()) << read_file(dir_ + "/prometheus.log");
  EXPECT_EQ(std::stol(value), used);
}

TEST_F(ViewVm, EventsResumeFromLastEventIdWithoutAGap) {
  make_volume("ws", {});
  const std::size_t before = events().size();
  ASSERT_GE(before, 1u);
  httplib::Client c("127.0.0.1", http_port());
  std::vector<std::uint64_t> ids;
  std::string buffer;
  bool made = false;
  c.set_read_timeout(std::chrono::seconds(60));
  c.Get("/events", {{"Last-Event-ID", std::to_string(before)}},
        [&](const char* data, std::size_t n) {
          if (!made) {
            made = true;
            std::thread([this] {
              ok("snapshot.create", {{"volume", "ws"}, {"name", "s1"}});
            }).detach();
          }
          buffer.append(data, n);
          std::size_t end;
          while ((end = buffer.find("\n\n")) != std::string::npos) {
            std::string msg = buffer.substr(0, end);
            buffer.erase(0, end + 2);
            if (msg.rfind("id: ", 0) == 0) ids.push_back(std::stoull(msg.substr(4)));
            if (msg.find("event: snapshot.created") != std::string::npos) return false;
          }
          return true;
        });
  ASSERT_FALSE(ids.empty());
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], before + 1 + i);
}

// Headless Chromium clicks through the view of a real run (tests/ui/
// view_test.mjs). Its screenshots land in the build tree (the guest sees the
// source read-only); docs/ui/ holds a copy.
TEST_F(ViewVm, ABrowserClicksThroughARealRun) {
  ASSERT_TRUE(exists(std::string(STEPSNAP_SOURCE_DIR) + "/tests/ui/node_modules/playwright-core"))
      << "run scripts/setup: it installs playwright-core into tests/ui";
  ASSERT_NO_FATAL_FAILURE(run_example("r1"));
  ok("snapshot.create", {{"volume", "ws"},
                         {"name", "labelled"},
                         {"labels", {{"note", "<script>window.pwned=1</script>"}}}});
  const std::string shots = std::string(STEPSNAP_BINARY_DIR) + "/ui-screenshots";
  fs::create_directories(shots);
  auto out = sh("cd " + std::string(STEPSNAP_SOURCE_DIR) + "/tests/ui && HOME=" + dir_ +
                " node view_test.mjs http://127.0.0.1:" + std::to_string(http_port()) + " " +
                shots + " house-prices r1 train labelled");
  EXPECT_EQ(out.rc, 0) << out.out << out.err;
  std::cout << out.out;
}

class ViewOffVm : public ViewVm {
 protected:
  ViewOffVm() { extra_args_ = {"--http-listen", ""}; }
};

TEST_F(ViewOffVm, AnEmptyListenAddressTurnsTheViewOff) {
  EXPECT_EQ(http_port(), -1);
  EXPECT_NE(read_file(log_path()).find("HTTP view off"), std::string::npos);
  auto listening = sh("ss -Hltnp | grep 'pid=" + std::to_string(pid_) + ",' || true");
  EXPECT_EQ(listening.out, "") << listening.out;
}

class ViewExposedVm : public ViewVm {
 protected:
  ViewExposedVm() { extra_args_ = {"--http-listen", "0.0.0.0:0"}; }
};

TEST_F(ViewExposedVm, AnExposedAddressIsServedWithAWarning) {
  EXPECT_GT(http_port(), 0);
  EXPECT_NE(read_file(log_path()).find("the view has no authentication"), std::string::npos);
}

}  // namespace
}  // namespace stepsnap::testing
