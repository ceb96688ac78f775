// scripts/bench-view, in the scripts/vm guest (label bench, not part of the
// suite): the HTTP view against the socket API doing the same read, in the
// same run, on a real stepsnapd.
//   1. a real run of STEPSNAP_BENCH_STEPS chained steps (default 100) made by
//      runner pipeline run, in a catalog of STEPSNAP_BENCH_SNAPSHOTS
//      snapshots (default 10,000): the run page (/runs/P/R), its JSON
//      (/api/v1/runs/P/R) and run.show on the socket; the first page of
//      snapshots over both; the first page of the runs list;
//   2. the delay from an event's time stamp (taken inside the committing
//      transaction) to its arrival at an /events client and at an
//      events.subscribe follower, both open at once.
// The snapshots beyond the run's are written straight into the stopped
// daemon's catalog, as scripts/bench-scale does (making 10,000 real ones
// one by one takes hours in the emulated guest): `faulty` rows without a
// thin device, in runs of 10 steps of another pipeline, which recovery
// leaves alone and no read filters on. Medians, and each as a ratio to the
// socket API's. Nothing is asserted on times: it reports.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/catalog/sqlite_db.h"
#include "protocol/api_client.h"
#include "tests/support/bench_stats.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// "2026-12-02T04:30:00.123456789Z" -> ns since the epoch.
std::int64_t parse_time(const std::string& t) {
  std::tm tm{};
  if (!strptime(t.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return 0;
  std::int64_t ns = static_cast<std::int64_t>(timegm(&tm)) * 1'000'000'000;
  auto dot = t.find('.');
  if (dot != std::string::npos) {
    std::string frac = t.substr(dot + 1, t.find('Z') - dot - 1);
    frac.resize(9, '0');
    ns += std::stoll(frac);
  }
  return ns;
}

// The daemon's socket, read as bytes: a request line out, the answer line
// back, not parsed, so that the client does the same work as for an HTTP
// answer (ApiClient parses every answer; that is timed as well).
class RawSocket {
 public:
  explicit RawSocket(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawSocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  // The answer line to one request line; empty on an error.
  std::string call(const std::string& op, const json& args) {
    std::string line = json{{"v", 1}, {"id", ++id_}, {"op", op}, {"args", args}}.dump() + "\n";
    if (fd_ < 0 || ::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      return "";
    std::string answer;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return "";
      answer.append(buf, static_cast<std::size_t>(n));
      if (answer.back() == '\n') return answer;
    }
  }

 private:
  int fd_ = -1;
  int id_ = 0;
};

// "app;dur=12.345" -> 12.345; -1 when absent.
double server_timing_ms(const httplib::Result& r) {
  if (!r) return -1;
  std::string v = r->get_header_value("Server-Timing");
  auto at = v.find("dur=");
  return at == std::string::npos ? -1 : std::stod(v.substr(at + 4));
}

class ViewBench : public StepsnapdFixture {
 protected:
  void SetUp() override {
    sh("ip link set lo up");
    data_size_ = "2G";
    ready_timeout_s_ = 900;
    StepsnapdFixture::SetUp();
  }

  // Writes `n` snapshot rows of the volume with id `origin` into the stopped
  // daemon's catalog: runs of 10 steps of pipeline "bulk", pre and post,
  // two labels each, chained by parent_id as real ones are.
  void bulk(std::int64_t origin, std::size_t n) {
    auto db = agent::Database::open(dir_ + "/state/catalog.db");
    ASSERT_TRUE(db) << db.error().message();
    auto& d = **db;
    auto sp = agent::Savepoint::begin(d);
    ASSERT_TRUE(sp) << sp.error().message();
    auto max_id = d.prepare("SELECT COALESCE(MAX(id), 0) FROM devices");
    ASSERT_TRUE(max_id && *max_id->step());
    std::int64_t id = max_id->int64(0);
    // Thin ids far above what the pool hands out; the pool keeps its own
    // counter, so later real snapshots get the ids they would anyway.
    std::int64_t thin = 8'000'000;
    std::optional<std::int64_t> parent;
    auto dev = d.prepare(
        "INSERT INTO devices (id, pool_id, name, kind, thin_id, origin_id, parent_id, state, "
        "size_bytes, mapped_bytes, created_ns, fault) VALUES (?, (SELECT id FROM pools), ?, "
        "'snapshot', ?, ?, ?, 'faulty', 2147483648, 65536, ?, 'bench: a row without a thin "
        "device')");
    auto step = d.prepare(
        "INSERT INTO step_snapshots (device_id, pipeline, run, step, phase, command, exit_status) "
        "VALUES (?, 'bulk', ?, ?, ?, 'python3 step.py', ?)");
    auto label = d.prepare("INSERT INTO labels (device_id, key, value) VALUES (?, ?, ?)");
    ASSERT_TRUE(dev && step && label);
    const std::int64_t t0 = 1'700'000'000'000'000'000;
    auto run_one = [](agent::Statement& st) {
      auto r = st.run();
      st.reset();
      return r;
    };
    for (std::size_t i = 0; i < n; ++i) {
      ++id;
      std::size_t run = i / 20, in_run = i % 20;
      char run_name[32], step_name[16];
      std::snprintf(run_name, sizeof run_name, "r%06zu", run);
      std::snprintf(step_name, sizeof step_name, "s%zu", in_run / 2);
      const bool post = in_run % 2;
      dev->bind(1, id)
          .bind(2, std::string("bulk-") + run_name + "-" + step_name + (post ? "-post" : "-pre"))
          .bind(3, thin++)
          .bind(4, origin)
          .bind(5, parent)
          .bind(6, t0 + static_cast<std::int64_t>(i) * 1'000'000);
      ASSERT_TRUE(run_one(*dev));
      step->bind(1, id).bind(2, run_name).bind(3, step_name).bind(4, post ? "post" : "pre");
      if (post)
        step->bind(5, std::int64_t{0});
      else
        step->bind_null(5);
      ASSERT_TRUE(run_one(*step));
      for (auto [k, v] : {std::pair{"team", "ml"}, std::pair{"notebook", "train.ipynb"}}) {
        label->bind(1, id).bind(2, k).bind(3, v);
        ASSERT_TRUE(run_one(*label));
      }
      parent = id;
    }
    ASSERT_TRUE(sp->commit());
  }
};

TEST_F(ViewBench, RunPageAndEventDelayAgainstTheSocketApi) {
  const std::size_t steps = env_or("STEPSNAP_BENCH_STEPS", 100);
  const std::size_t snapshots = env_or("STEPSNAP_BENCH_SNAPSHOTS", 10000);
  const std::size_t rounds = env_or("STEPSNAP_BENCH_ROUNDS", 15);
  make_volume("ws", {});
  json spec = {{"pipeline", "bench"},
               {"volumes", {{{"name", "ws"}, {"mount", "/w"}}}},
               {"workdir", "/w"},
               {"steps", json::array()}};
  for (std::size_t i = 0; i < steps; ++i) {
    json s = {{"name", "s" + std::to_string(i)}, {"command", {"true"}}};
    if (i) s["after"] = {"s" + std::to_string(i - 1)};
    spec["steps"].push_back(s);
  }
  std::ofstream(dir_ + "/bench.json") << spec.dump();
  auto run = sh(std::string(RUNNER_PATH) + " pipeline run " + dir_ + "/bench.json --agent " +
                socket_ + " --run r1");
  ASSERT_EQ(run.rc, 0) << run.out << run.err;
  std::size_t have = ok("snapshot.list", {{"limit", 10000}})["snapshots"].size();
  if (have < snapshots) {
    auto ws_id = ok("volume.list", json::object())["volumes"][0]["id"].get<std::int64_t>();
    stop_daemon(SIGTERM);
    bulk(ws_id, snapshots - have);
    if (HasFatalFailure()) return;
    start_daemon();
  }
  auto api = protocol::ApiClient::connect(socket_);
  ASSERT_TRUE(api);
  have = 0;
  for (json page = ok("snapshot.list", {{"limit", 10000}});;
       page = ok("snapshot.list", {{"limit", 10000}, {"after", page["next_after"]}})) {
    have += page["snapshots"].size();
    if (!page.contains("next_after")) break;
  }

  // 1. The run: page, JSON, socket.
  httplib::Client http("127.0.0.1", http_port());
  http.set_keep_alive(true);
  std::map<std::string, std::vector<double>> ms;
  auto timed = [&](const std::string& what, const std::function<bool()>& fn) {
    auto t0 = Clock::now();
    bool good = fn();
    ms[what].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    EXPECT_TRUE(good) << what;
  };
  RawSocket raw(socket_);
  auto server = [&](const std::string& what, const httplib::Result& r) {
    if (double t = server_timing_ms(r); t >= 0) ms[what + " [server]"].push_back(t);
  };
  for (std::size_t i = 0; i < rounds; ++i) {
    timed("socket run.show", [&] {
      std::string answer = raw.call("run.show", {{"pipeline", "bench"}, {"run", "r1"}});
      // Keys come sorted ({"id":..,"ok":true,"result":..,"v":1}).
      return answer.find("\"ok\":true") != std::string::npos &&
             answer.find("\"steps\":[") != std::string::npos;
    });
    timed("socket run.show, parsed (ApiClient)", [&] {
      auto r = api->request("run.show", {{"pipeline", "bench"}, {"run", "r1"}});
      return r && (*r)["steps"].size() == steps;
    });
    timed("http /api/v1/runs/bench/r1", [&] {
      auto r = http.Get("/api/v1/runs/bench/r1");
      server("http /api/v1/runs/bench/r1", r);
      return r && r->status == 200;
    });
    timed("http /runs/bench/r1 (page)", [&] {
      auto r = http.Get("/runs/bench/r1");
      server("http /runs/bench/r1 (page)", r);
      return r && r->status == 200;
    });
    timed("socket snapshot.list (page)", [&] {
      auto r = api->request("snapshot.list", {{"limit", 100}});
      return r && (*r)["snapshots"].size() == 100;
    });
    timed("http /api/v1/snapshots (page)", [&] {
      auto r = http.Get("/api/v1/snapshots?limit=100");
      return r && r->status == 200 && json::parse(r->body)["snapshots"].size() == 100;
    });
    timed("http / (first page of runs)", [&] {
      auto r = http.Get("/");
      server("http / (first page of runs)", r);
      return r && r->status == 200 && r->body.find("next page") != std::string::npos;
    });
  }

  // 2. Commit -> client, both clients open at once.
  const std::size_t events_wanted = rounds;
  const std::uint64_t from = events().back()["seq"];
  std::mutex m;
  std::vector<double> sse_delay, sock_delay;
  std::atomic<int> ready{0};
  std::thread sse([&] {
    httplib::Client c("127.0.0.1", http_port());
    c.set_read_timeout(std::chrono::seconds(120));
    std::string buffer;
    bool counted = false;
    c.Get(
        "/events", {{"Last-Event-ID", std::to_string(from)}}, [&](const char* data, std::size_t n) {
          if (!counted) {
            counted = true;
            ++ready;
          }
          const std::int64_t now = realtime_ns();
          buffer.append(data, n);
          std::size_t end;
          while ((end = buffer.find("\n\n")) != std::string::npos) {
            std::string msg = buffer.substr(0, end);
            buffer.erase(0, end + 2);
            auto d = msg.find("data: ");
            if (d == std::string::npos || msg.find("event: snapshot.created") == std::string::npos)
              continue;
            json e = json::parse(msg.substr(d + 6));
            std::lock_guard lock(m);
            sse_delay.push_back((now - parse_time(e["time"])) / 1e6);
          }
          std::lock_guard lock(m);
          return sse_delay.size() < events_wanted;
        });
  });
  std::thread sock([&] {
    auto c = protocol::ApiClient::connect(socket_);
    if (!c || !c->send("events.subscribe", {{"since", from}, {"follow", true}})) return;
    auto first = c->read();
    ++ready;
    while (true) {
      auto line = c->read();
      const std::int64_t now = realtime_ns();
      if (!line) return;
      if (!line->contains("event") || (*line)["event"]["type"] != "snapshot.created") continue;
      std::lock_guard lock(m);
      sock_delay.push_back((now - parse_time((*line)["event"]["time"])) / 1e6);
      if (sock_delay.size() >= events_wanted) return;
    }
  });
  // The SSE client counts as ready once its first bytes (retry:) arrive.
  for (int i = 0; i < 600 && ready < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (std::size_t i = 0; i < events_wanted; ++i) {
    ASSERT_TRUE(api->request("snapshot.create", {{"volume", "ws"}}));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  sse.join();
  sock.join();

  char line[200];
  std::string report = "view benchmark: " + std::to_string(steps) + "-step run, " +
                       std::to_string(have) + " snapshots in the catalog, " +
                       std::to_string(rounds) + " rounds (median ms; ratio to the socket API)\n";
  auto row = [&](const char* what, const char* base_name) {
    const double base = base_name ? median(ms[base_name]) : 0;
    if (base > 0)
      std::snprintf(line, sizeof line, "  %-40s %8.2f  (%.2f)\n", what, median(ms[what]),
                    median(ms[what]) / base);
    else
      std::snprintf(line, sizeof line, "  %-40s %8.2f\n", what, median(ms[what]));
    report += line;
  };
  for (const char* what : {"socket run.show", "socket run.show, parsed (ApiClient)",
                           "http /api/v1/runs/bench/r1", "http /api/v1/runs/bench/r1 [server]",
                           "http /runs/bench/r1 (page)", "http /runs/bench/r1 (page) [server]"})
    row(what, "socket run.show");
  for (const char* what : {"socket snapshot.list (page)", "http /api/v1/snapshots (page)"})
    row(what, "socket snapshot.list (page)");
  row("http / (first page of runs)", nullptr);
  row("http / (first page of runs) [server]", nullptr);
  report += "  ([server]: the view's Server-Timing, the handler's time before sending)\n";
  const double sock_med = median(sock_delay);
  std::snprintf(line, sizeof line, "  %-40s %8.2f  (1.00)\n", "commit -> events.subscribe",
                sock_med);
  report += line;
  std::snprintf(line, sizeof line, "  %-40s %8.2f  (%.2f)\n", "commit -> /events (SSE)",
                median(sse_delay), sock_med > 0 ? median(sse_delay) / sock_med : 0.0);
  report += line;
  std::cout << report;
  if (const char* out = std::getenv("STEPSNAP_BENCH_OUT")) std::ofstream(out) << report;
  EXPECT_EQ(sse_delay.size(), events_wanted);
  EXPECT_EQ(sock_delay.size(), events_wanted);
}

}  // namespace
}  // namespace stepsnap::testing
