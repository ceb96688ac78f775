// scripts/bench-scale, in the scripts/vm guest (label bench, not part of the
// suite): stepsnapd's reads and memory with a catalog of
// STEPSNAP_BENCH_SNAPSHOTS snapshots (default 100,000) and
// STEPSNAP_BENCH_EVENTS events (default 1,000,000).
//
// A real daemon makes a volume and a few real snapshots; it is stopped and
// the bulk is written straight into its catalog (one transaction of SQLite
// inserts: making 100,000 real snapshots one by one would take hours in the
// emulated guest). The bulk rows are `faulty` (no thin device behind them),
// which recovery leaves alone and no read filters on, so they cost every
// read what real rows would. Then the daemon is started again on it and
// each read is timed over one kept connection; the same reads on the small
// catalog, before the bulk, are the baseline. RSS from /proc. A real
// snapshot.create of the volume is timed before and after too. Nothing is
// asserted on times: it reports (STEPSNAP_BENCH_OUT gets the table).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agent/catalog/sqlite_db.h"
#include "common/time.h"
#include "protocol/api_client.h"
#include "tests/support/bench_stats.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// "VmRSS" or "VmHWM" of a process, in KiB.
long status_kib(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  }
  return -1;
}

constexpr int kStepsPerRun = 10;  // each with a pre and a post snapshot

// A client that sends one request line and reads `lines` answer lines
// without parsing them: the agent's part of a read, apart from the
// client's JSON parse (which stepsnapctl and ApiClient add). Returns the
// last line read ("" when the connection failed).
class RawClient {
 public:
  explicit RawClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  std::string call(const std::string& op, const json& args, std::size_t lines) {
    std::string req = json{{"v", 1}, {"id", ++id_}, {"op", op}, {"args", args}}.dump() + "\n";
    if (fd_ < 0 || ::write(fd_, req.data(), req.size()) != static_cast<ssize_t>(req.size()))
      return "";
    std::string last;
    std::size_t pos = 0;  // lines taken from pos on; the buffer compacted per read, not per line
    for (std::size_t got = 0; got < lines;) {
      auto nl = buffer_.find('\n', pos);
      if (nl != std::string::npos) {
        if (got + 1 == lines) last = buffer_.substr(pos, nl - pos);
        pos = nl + 1;
        ++got;
        continue;
      }
      buffer_.erase(0, pos);
      pos = 0;
      char chunk[65536];
      ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n <= 0) return "";
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
    buffer_.erase(0, pos);
    return last;
  }

 private:
  int fd_ = -1;
  std::uint64_t id_ = 0;
  std::string buffer_;
};

class ScaleBench : public StepsnapdFixture {
 protected:
  ScaleBench() {
    extra_args_ = {"--event-retention", "100000000"};
    ready_timeout_s_ = 900;
  }

  // Writes `snapshots` snapshot rows of the volume with id `origin` (runs
  // of kStepsPerRun steps, pre and post, chained by parent_id as real ones
  // are) and `events` event rows, into the stopped daemon's catalog.
  void bulk(std::int64_t origin, std::size_t snapshots, std::size_t events) {
    auto db = agent::Database::open(dir_ + "/state/catalog.db");
    ASSERT_TRUE(db) << db.error().message();
    auto& d = **db;
    auto sp = agent::Savepoint::begin(d);
    ASSERT_TRUE(sp) << sp.error().message();
    auto max_of = [&](const std::string& sql) {
      auto st = d.prepare(sql);
      EXPECT_TRUE(st);
      EXPECT_TRUE(*st->step());
      return st->int64(0);
    };
    std::int64_t id = max_of("SELECT COALESCE(MAX(id), 0) FROM devices");
    // Thin ids far above what the pool hands out (the pool keeps its own
    // counter, dm/thin_pool.h), and the catalog's counter left alone: the
    // real snapshots taken after the bulk get the ids they would anyway.
    std::int64_t thin = 8'000'000;
    auto parent_st = d.prepare(
        "SELECT id FROM devices WHERE origin_id = ? AND kind = 'snapshot' ORDER BY id DESC LIMIT "
        "1");
    ASSERT_TRUE(parent_st);
    parent_st->bind(1, origin);
    std::optional<std::int64_t> parent;
    if (*parent_st->step()) parent = parent_st->int64(0);
    auto dev = d.prepare(
        "INSERT INTO devices (id, pool_id, name, kind, thin_id, origin_id, parent_id, state, "
        "size_bytes, mapped_bytes, created_ns, fault) VALUES (?, (SELECT id FROM pools), ?, "
        "'snapshot', ?, ?, ?, 'faulty', 1073741824, 65536, ?, 'bench: a row without a thin "
        "device')");
    auto step = d.prepare(
        "INSERT INTO step_snapshots (device_id, pipeline, run, step, phase, command, exit_status) "
        "VALUES (?, 'bench', ?, ?, ?, 'python3 step.py', ?)");
    auto label = d.prepare("INSERT INTO labels (device_id, key, value) VALUES (?, ?, ?)");
    ASSERT_TRUE(dev && step && label);
    const std::int64_t t0 = 1'700'000'000'000'000'000;
    for (std::size_t i = 0; i < snapshots; ++i) {
      ++id;
      std::size_t run = i / (2 * kStepsPerRun), in_run = i % (2 * kStepsPerRun);
      char run_name[32], step_name[16];
      std::snprintf(run_name, sizeof run_name, "r%06zu", run);
      std::snprintf(step_name, sizeof step_name, "s%zu", in_run / 2);
      bool post = in_run % 2;
      dev->bind(1, id)
          .bind(2, std::string("bench-") + run_name + "-" + step_name + (post ? "-post" : "-pre"))
          .bind(3, thin++)
          .bind(4, origin)
          .bind(5, parent)
          .bind(6, t0 + static_cast<std::int64_t>(i) * 1'000'000);
      {
        auto r = dev->run();
        ASSERT_TRUE(r) << r.error().message();
        dev->reset();
      }
      step->bind(1, id).bind(2, run_name).bind(3, step_name).bind(4, post ? "post" : "pre");
      if (post)
        step->bind(5, std::int64_t{0});
      else
        step->bind_null(5);
      {
        auto r = step->run();
        ASSERT_TRUE(r) << r.error().message();
        step->reset();
      }
      for (auto [k, v] : {std::pair{"team", "ml"}, std::pair{"notebook", "train.ipynb"}}) {
        label->bind(1, id).bind(2, k).bind(3, v);
        {
          auto r = label->run();
          ASSERT_TRUE(r) << r.error().message();
          label->reset();
        }
      }
      parent = id;
    }
    std::int64_t seq = max_of("SELECT last FROM event_seq");
    auto ev = d.prepare("INSERT INTO events (seq, type, time_ns, body) VALUES (?, ?, ?, ?)");
    ASSERT_TRUE(ev);
    const std::string time = format_rfc3339_ns(t0);
    for (std::size_t i = 0; i < events; ++i) {
      ++seq;
      // Formatted by hand (a json object per row costs minutes in the
      // emulated guest at a million rows), exactly as the agent writes a
      // line: nlohmann's sorted keys, the row's own seq and time. The
      // agent serves such a line as it is stored (EventLine).
      char body[320];
      std::snprintf(body, sizeof body,
                    "{\"data\":{\"name\":\"bench-r%06zu-post\",\"pause_ns\":115000000,"
                    "\"step\":{\"pipeline\":\"bench\",\"run\":\"r%06zu\",\"step\":\"s\"},"
                    "\"volume\":\"ws\"},\"seq\":%lld,\"time\":\"%s\",\"type\":\"snapshot.created\","
                    "\"version\":1}",
                    i / 20, i / 20, static_cast<long long>(seq), time.c_str());
      ev->bind(1, seq).bind(2, "snapshot.created").bind(3, t0).bind(4, std::string(body));
      {
        auto r = ev->run();
        ASSERT_TRUE(r) << r.error().message();
        ev->reset();
      }
    }
    ASSERT_TRUE(d.prepare("UPDATE event_seq SET last = ?")->bind(1, seq).run());
    ASSERT_TRUE(sp->commit());
  }
};

TEST_F(ScaleBench, ReadsAndMemoryAtOneHundredThousandSnapshots) {
  const std::size_t snapshots = env_or("STEPSNAP_BENCH_SNAPSHOTS", 100000);
  const std::size_t events_n = env_or("STEPSNAP_BENCH_EVENTS", 1000000);
  const std::size_t rounds = env_or("STEPSNAP_BENCH_ROUNDS", 9);
  make_volume("ws", {});
  // A real run of the volume for the baseline: 2 steps' worth of snapshots.
  for (const char* phase : {"pre", "post"}) {
    (void)phase;
    ok("snapshot.create", {{"volume", "ws"}, {"pipeline", "bench"}, {"run", "small"}});
  }
  std::map<std::string, std::vector<double>> ms;
  std::map<std::string, std::string> what;
  // The reads the issue names, each against a row in the middle of the
  // catalog once it is big.
  auto reads = [&](const std::string& tag, const std::string& run, const std::string& snap,
                   std::uint64_t since) {
    auto api = protocol::ApiClient::connect(socket_);
    ASSERT_TRUE(api) << api.error().message();
    auto timed = [&](const std::string& name, const std::string& op, const json& args,
                     bool stream) {
      for (std::size_t i = 0; i < rounds; ++i) {
        auto t0 = Clock::now();
        std::size_t got = 0;
        if (!stream) {
          auto r = api->request(op, args);
          ASSERT_TRUE(r) << name << ": " << r.error().message();
        } else {
          auto r = api->call(op, args);
          ASSERT_TRUE(r && (*r).value("ok", false)) << name;
          const std::uint64_t last = (*r)["result"].value("last_seq", std::uint64_t{0});
          std::uint64_t seq = args.value("since", std::uint64_t{0});
          // The stream ends without a line of its own: at the limit, or at
          // the last seq the answer named.
          while (seq < last && got < args.value("limit", std::size_t{0})) {
            auto line = api->read();
            ASSERT_TRUE(line) << line.error().message();
            ASSERT_TRUE(line->contains("event")) << line->dump();
            seq = (*line)["event"]["seq"];
            ++got;
          }
        }
        ms[tag + " " + name].push_back(
            std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      }
    };
    timed("snapshot.list --run", "snapshot.list", {{"pipeline", "bench"}, {"run", run}}, false);
    timed("snapshot.list (first page)", "snapshot.list", json::object(), false);
    timed("snapshot.list --limit 50 (stepsnapctl's page)", "snapshot.list", {{"limit", 50}}, false);
    timed("snapshot.show", "snapshot.show", {{"name", snap}}, false);
    timed("run.show", "run.show", {{"pipeline", "bench"}, {"run", run}}, false);
    timed("events --since N --limit 1000", "events.subscribe",
          {{"since", since}, {"follow", false}, {"limit", 1000}}, true);
    // The same two largest reads with the answer read unparsed, and each
    // checked by its last line.
    RawClient raw(socket_);
    auto timed_raw = [&](const std::string& name, const std::string& op, const json& args,
                         std::size_t lines, const std::string& expect) {
      for (std::size_t i = 0; i < rounds; ++i) {
        auto t0 = Clock::now();
        std::string last = raw.call(op, args, lines);
        ms[tag + " " + name].push_back(
            std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        ASSERT_NE(last.find(expect), std::string::npos) << name << ": " << last.substr(0, 300);
      }
    };
    timed_raw("snapshot.list (first page), unparsed", "snapshot.list", json::object(), 1,
              "\"ok\":true");
    // The log's last seq, from a subscription's answer (limit 1: one line to drain).
    auto head = api->call("events.subscribe", {{"since", since}, {"follow", false}, {"limit", 1}});
    ASSERT_TRUE(head && (*head).value("ok", false));
    const std::uint64_t last_seq = (*head)["result"].value("last_seq", std::uint64_t{0});
    if (last_seq > since) {
      ASSERT_TRUE(api->read());
    }
    const std::uint64_t n = std::min<std::uint64_t>(1000, last_seq - since);
    timed_raw("events --since N --limit 1000, unparsed", "events.subscribe",
              {{"since", since}, {"follow", false}, {"limit", 1000}}, 1 + n,
              "\"seq\":" + std::to_string(since + n) + ",");
  };
  auto snap_create = [&](const std::string& tag) {
    for (std::size_t i = 0; i < 5; ++i) {
      auto t0 = Clock::now();
      ok("snapshot.create", {{"volume", "ws"}});
      ms[tag + " snapshot.create (real)"].push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  };
  auto small_snap =
      ok("snapshot.list", {{"run", "small"}})["snapshots"][1]["name"].get<std::string>();
  reads("small", "small", small_snap, 0);
  snap_create("small");
  long small_rss = status_kib(pid_, "VmRSS"), small_hwm = status_kib(pid_, "VmHWM");
  auto ws_id = ok("volume.list", json::object())["volumes"][0]["id"].get<std::int64_t>();
  const std::uint64_t small_seq = events().back()["seq"];

  stop_daemon(SIGTERM);
  auto t0 = Clock::now();
  bulk(ws_id, snapshots, events_n);
  double bulk_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (HasFatalFailure()) return;
  t0 = Clock::now();
  start_daemon();
  double start_s = std::chrono::duration<double>(Clock::now() - t0).count();
  long start_rss = status_kib(pid_, "VmRSS");

  std::size_t mid_run = snapshots / (2 * kStepsPerRun) / 2;
  char run_name[32];
  std::snprintf(run_name, sizeof run_name, "r%06zu", mid_run);
  std::string big_snap = std::string("bench-") + run_name + "-s5-post";
  reads("big", run_name, big_snap, small_seq + events_n / 2);
  snap_create("big");
  long big_rss = status_kib(pid_, "VmRSS"), big_hwm = status_kib(pid_, "VmHWM");

  std::ostringstream report;
  char line[256];
  std::snprintf(line, sizeof line,
                "scale: %zu snapshots, %zu events written in %.1f s; restart to ready %.1f s\n",
                snapshots, events_n, bulk_s, start_s);
  report << line;
  report << "| op | small catalog ms | at scale ms | ratio |\n|---|---|---|---|\n";
  for (const char* op :
       {"snapshot.list --run", "snapshot.list (first page)", "snapshot.list (first page), unparsed",
        "snapshot.list --limit 50 (stepsnapctl's page)", "snapshot.show", "run.show",
        "events --since N --limit 1000", "events --since N --limit 1000, unparsed",
        "snapshot.create (real)"}) {
    double a = median(ms[std::string("small ") + op]), b = median(ms[std::string("big ") + op]);
    std::snprintf(line, sizeof line, "| %s | %.2f | %.2f | %.2f |\n", op, a, b, a > 0 ? b / a : 0);
    report << line;
  }
  std::snprintf(line, sizeof line,
                "rss_kib: small %ld (peak %ld); at scale after start %ld, after the reads %ld "
                "(peak %ld)\n",
                small_rss, small_hwm, start_rss, big_rss, big_hwm);
  report << line;
  std::fputs(report.str().c_str(), stdout);
  if (const char* out = std::getenv("STEPSNAP_BENCH_OUT")) std::ofstream(out) << report.str();
}

}  // namespace
}  // namespace stepsnap::testing
