#include "agent/daemon/options.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

Result<ParsedOptions> parse(std::vector<std::string> args) {
  args.insert(args.begin(), "stepsnapd");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  return parse_daemon_options(static_cast<int>(argv.size()), argv.data());
}

DaemonOptions ok(std::vector<std::string> args) {
  auto r = parse(std::move(args));
  EXPECT_TRUE(r) << r.error().message();
  if (!r || !std::holds_alternative<DaemonOptions>(*r)) return {};
  return std::get<DaemonOptions>(*r);
}

std::string error_of(std::vector<std::string> args) {
  auto r = parse(std::move(args));
  EXPECT_FALSE(r);
  return r ? "" : r.error().message();
}

const std::vector<std::string> kDevices = {"--pool-data-device", "/dev/sdb",
                                           "--pool-metadata-device", "/dev/sdc"};

TEST(Options, DefaultsWithDevices) {
  auto o = ok(kDevices);
  EXPECT_EQ(o.state_dir, "/var/lib/stepsnap");
  EXPECT_EQ(o.catalog_path(), "/var/lib/stepsnap/catalog.db");
  EXPECT_EQ(o.socket_path, "/run/stepsnap/stepsnapd.sock");
  EXPECT_EQ(o.socket_group, "stepsnap");
  EXPECT_EQ(o.pool.block_bytes, 64u * 1024);
  EXPECT_EQ(o.pool.data_device, "/dev/sdb");
  EXPECT_EQ(o.log_level, log::Level::info);
  EXPECT_EQ(o.event_retention, 100000u);
  EXPECT_EQ(o.hold_timeout_seconds, 600u);
  EXPECT_EQ(o.step_lease_seconds, 60u);
}

TEST(Options, HttpViewOnAtLoopbackByDefaultOffWhenEmpty) {
  auto o = ok(kDevices);
  ASSERT_TRUE(o.http);
  EXPECT_EQ(o.http->text(), "127.0.0.1:9477");
  EXPECT_TRUE(o.http->loopback);
  auto args = kDevices;
  args.insert(args.end(), {"--http-listen", ""});
  EXPECT_FALSE(ok(args).http);
  args.back() = "0.0.0.0:8080";
  auto exposed = ok(args);
  ASSERT_TRUE(exposed.http);
  EXPECT_FALSE(exposed.http->loopback);
  args.back() = "8080";
  EXPECT_NE(error_of(args).find("--http-listen 8080: expected HOST:PORT"), std::string::npos)
      << error_of(args);
}

TEST(Options, StepLeaseIsWholeSecondsWithinBounds) {
  auto args = kDevices;
  args.insert(args.end(), {"--step-lease", "5"});
  EXPECT_EQ(ok(args).step_lease_seconds, 5u);
  for (const char* bad : {"0", "86401", "-1", "2.5", "1m", ""}) {
    auto a = kDevices;
    a.insert(a.end(), {"--step-lease", bad});
    std::string e = error_of(a);
    EXPECT_EQ(e.rfind("--step-lease", 0), 0u) << bad << ": " << e;
    EXPECT_NE(e.find("1 to 86400"), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(Options, StepCgroupRootIsAnAbsolutePathWithoutDots) {
  EXPECT_EQ(ok(kDevices).step_cgroup_root, "");
  auto args = kDevices;
  args.insert(args.end(), {"--step-cgroup-root", "/sys/fs/cgroup/kubepods.slice/"});
  EXPECT_EQ(ok(args).step_cgroup_root, "/sys/fs/cgroup/kubepods.slice");
  for (const char* bad : {"kubepods.slice", "/sys/fs/cgroup/../etc", "/sys/fs/cgroup/.", "/"}) {
    auto a = kDevices;
    a.insert(a.end(), {"--step-cgroup-root", bad});
    std::string e = error_of(a);
    EXPECT_EQ(e.rfind("--step-cgroup-root", 0), 0u) << bad << ": " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(Options, HoldTimeoutIsWholeSecondsWithinBounds) {
  auto args = kDevices;
  args.insert(args.end(), {"--hold-timeout", "30"});
  EXPECT_EQ(ok(args).hold_timeout_seconds, 30u);
  for (const char* bad : {"0", "86401", "-5", "1.5", "10s", ""}) {
    auto a = kDevices;
    a.insert(a.end(), {"--hold-timeout", bad});
    std::string e = error_of(a);
    EXPECT_EQ(e.rfind("--hold-timeout", 0), 0u) << bad << ": " << e;
    EXPECT_NE(e.find("1 to 86400"), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(Options, LoopFiles) {
  auto o = ok({"--pool-loop-dir", "/var/tmp/pool", "--pool-loop-data-size", "20G",
               "--pool-loop-metadata-size", "256M", "--pool-block-size", "128K", "--log-level",
               "debug"});
  EXPECT_EQ(o.pool.loop_data_bytes, 20ull << 30);
  EXPECT_EQ(o.pool.loop_metadata_bytes, 256ull << 20);
  EXPECT_EQ(o.pool.block_bytes, 128u * 1024);
  EXPECT_EQ(o.log_level, log::Level::debug);
}

TEST(Options, HelpExplainsEveryFlag) {
  auto r = parse({"--help"});
  ASSERT_TRUE(r);
  auto text = std::get<HelpRequested>(*r).text;
  for (const char* flag :
       {"--config", "--state-dir", "--socket", "--socket-group", "--event-log", "--log-level",
        "--pool-data-device", "--pool-loop-dir", "--pool-block-size", "--event-retention",
        "--hold-timeout", "--step-lease"}) {
    EXPECT_NE(text.find(flag), std::string::npos) << flag;
  }
}

TEST(Options, ErrorsAreOneLineNamingTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string starts;
  };
  std::vector<Case> cases = {
      {{}, "--pool-data-device: no pool given"},
      {{"--pool-data-device", "/dev/sdb"}, "--pool-metadata-device: missing"},
      {{"--pool-data-device", "/dev/sdb", "--pool-metadata-device", "/dev/sdb"},
       "--pool-metadata-device: is the same device"},
      {{"--pool-loop-dir", "/x", "--pool-data-device", "/dev/a"}, "--pool-loop-dir: give either"},
      {{"--pool-loop-dir", "/x", "--pool-loop-data-size", "12Q", "--pool-loop-metadata-size", "8M"},
       "--pool-loop-data-size: \"12Q\" is not a size"},
      {{"--pool-loop-dir", "/x", "--pool-loop-data-size", "1G", "--pool-loop-metadata-size", "1M"},
       "--pool-loop-metadata-size: is under 2M"},
      {{"--pool-loop-dir", "rel", "--pool-loop-data-size", "1G", "--pool-loop-metadata-size", "8M"},
       "--pool-loop-dir: missing or not absolute"},
  };
  for (const auto& c : cases) {
    std::string e = error_of(c.args);
    EXPECT_EQ(e.rfind(c.starts, 0), 0u) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  auto with = [](std::vector<std::string> extra) {
    auto a = kDevices;
    a.insert(a.end(), extra.begin(), extra.end());
    return error_of(a);
  };
  EXPECT_EQ(with({"--log-level", "loud"}).rfind("--log-level: \"loud\"", 0), 0u);
  EXPECT_EQ(with({"--state-dir", "rel"}).rfind("--state-dir:", 0), 0u);
  EXPECT_EQ(with({"--socket", "rel.sock"}).rfind("--socket:", 0), 0u);
  EXPECT_EQ(with({"--socket", "/" + std::string(120, 's')}).rfind("--socket: path is", 0), 0u);
  EXPECT_EQ(with({"--pool-block-size", "100K"}).rfind("--pool-block-size:", 0), 0u);
  EXPECT_EQ(with({"--pool-block-size", "2G"}).rfind("--pool-block-size:", 0), 0u);
  EXPECT_EQ(with({"--pool-name", "a/b"}).rfind("--pool-name:", 0), 0u);
  EXPECT_EQ(with({"--event-retention", "0"}).rfind("--event-retention:", 0), 0u);
  EXPECT_EQ(with({"--pool-low-space-percent", "100"}).rfind("--pool-low-space-percent:", 0), 0u);
  EXPECT_NE(with({"--no-such-flag"}).find("no-such-flag"), std::string::npos);
  EXPECT_NE(with({"--event-retention", "many"}).find("event-retention"), std::string::npos);
}

TEST(Options, ConfigFileFillsAndFlagsWin) {
  testing::TempDir dir;
  std::string conf = dir.file("stepsnapd.conf");
  std::ofstream(conf) << "state-dir = /srv/stepsnap\n"
                         "socket-group = mlusers\n"
                         "log-level = warn\n"
                         "pool-loop-dir = /srv/stepsnap/loop\n"
                         "pool-loop-data-size = 4G\n"
                         "pool-loop-metadata-size = 64M\n";
  auto o = ok({"--config", conf, "--log-level", "error"});
  EXPECT_EQ(o.state_dir, "/srv/stepsnap");
  EXPECT_EQ(o.socket_group, "mlusers");
  EXPECT_EQ(o.log_level, log::Level::error);  // the flag wins
  EXPECT_EQ(o.pool.loop_data_bytes, 4ull << 30);
}

TEST(Options, ConfigFileProblemsAreNamed) {
  testing::TempDir dir;
  EXPECT_EQ(error_of({"--config", dir.file("missing.conf")}).rfind("--config: cannot read", 0), 0u);
  std::string conf = dir.file("bad.conf");
  std::ofstream(conf) << "no-such-key = 1\n";
  EXPECT_NE(error_of({"--config", conf}).find("no-such-key"), std::string::npos);
}

TEST(ParseSize, UnitsAndRejects) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("64K"), 65536u);
  EXPECT_EQ(parse_size("20G"), 20ull << 30);
  EXPECT_EQ(parse_size("1GiB"), 1ull << 30);
  EXPECT_EQ(parse_size("2TB"), 2ull << 40);
  for (const char* bad : {"", "0", "G", "-1", "1.5G", "12Q", "99999999999999999999", "16777216T"})
    EXPECT_FALSE(parse_size(bad)) << bad;
}

TEST(Options, FormatPoolIsOffUnlessGivenOnTheCommandLine) {
  EXPECT_FALSE(ok(kDevices).format_pool);
  auto args = kDevices;
  args.push_back("--format-pool");
  EXPECT_TRUE(ok(args).format_pool);
}

TEST(Options, FormatPoolInAConfigFileIsRefused) {
  // Left in a file, it would wipe the pool at every later start.
  testing::TempDir dir;
  std::ofstream(dir.file("stepsnapd.conf")) << "format-pool = true\n";
  auto args = kDevices;
  args.insert(args.end(), {"--config", dir.file("stepsnapd.conf")});
  EXPECT_NE(error_of(args).find("--format-pool: is not accepted in a config file"),
            std::string::npos);
}

TEST(Options, PerPeerLimits) {
  auto o = ok(kDevices);
  EXPECT_EQ(o.request_timeout_seconds, 60u);
  EXPECT_EQ(o.max_connections_per_uid, 16u);
  EXPECT_EQ(o.max_steps_per_peer, 256u);
  auto args = kDevices;
  args.insert(args.end(), {"--max-connections-per-uid", "57"});
  EXPECT_NE(error_of(args).find("--max-connections-per-uid"), std::string::npos);
  args = kDevices;
  args.insert(args.end(), {"--request-timeout", "0"});
  EXPECT_NE(error_of(args).find("--request-timeout"), std::string::npos);
}

}  // namespace
}  // namespace stepsnap::agent

namespace stepsnap::agent {
namespace {

TEST(Options, RetentionRulesFromTheConfigFileAndFlags) {
  auto o = ok(kDevices);
  EXPECT_TRUE(o.retention.empty()) << "no rule: nothing is ever deleted";
  EXPECT_EQ(o.gc_interval_seconds, 3600u);
  EXPECT_EQ(o.retention_file(), "/var/lib/stepsnap/retention.json");

  testing::TempDir dir;
  std::string conf = dir.file("stepsnapd.conf");
  std::ofstream(conf) << "retention = * keep-runs=10 max-age=30d keep=pin\n"
                         "retention = nightly keep-runs=3 keep-failed-runs=2\n"
                         "gc-interval = 30m\n";
  auto args = kDevices;
  args.insert(args.end(), {"--config", conf});
  auto file = ok(args);
  ASSERT_EQ(file.retention.size(), 2u);
  EXPECT_EQ(file.retention["*"].keep_runs, 10u);
  EXPECT_EQ(file.retention["*"].max_age_seconds, 30u * 86400);
  EXPECT_EQ(file.retention["nightly"].keep_failed_runs, 2u);
  EXPECT_EQ(file.gc_interval_seconds, 1800u);

  // As for every flag, the command line's --retention replaces the file's.
  args.insert(args.end(), {"--retention", "nightly keep-runs=1", "--gc-interval", "0"});
  auto flags = ok(args);
  ASSERT_EQ(flags.retention.size(), 1u);
  EXPECT_EQ(flags.retention["nightly"].keep_runs, 1u);
  EXPECT_EQ(flags.gc_interval_seconds, 0u);
}

TEST(Options, RetentionProblemsAreNamed) {
  auto with = [](std::vector<std::string> extra) {
    auto args = kDevices;
    args.insert(args.end(), extra.begin(), extra.end());
    return error_of(args);
  };
  EXPECT_EQ(with({"--retention", "p keep-runs=0"}).rfind("--retention: ", 0), 0u);
  EXPECT_NE(with({"--retention", "p keep-runs=1", "--retention", "p max-age=1d"}).find("two rules"),
            std::string::npos);
  EXPECT_EQ(with({"--gc-interval", "soon"}).rfind("--gc-interval: ", 0), 0u);
}

}  // namespace
}  // namespace stepsnap::agent
