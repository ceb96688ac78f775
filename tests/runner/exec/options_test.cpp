// `runner exec` options are plain data: parsed here without a kernel (label unit).
#include "runner/exec/options.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace stepsnap::runner {
namespace {

using Args = std::vector<std::string>;

Args named(Args extra) {
  Args a{"--pipeline", "train", "--run", "r1", "--step", "prep"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

TEST(ExecOptions, EveryOptionLandsInItsField) {
  auto o = parse_exec_options(named({"--agent",     "/tmp/a.sock",
                                     "--volume",    "workspace:/home/jovyan",
                                     "--volume",    "data:/data:ro",
                                     "--workdir",   "/home/jovyan",
                                     "--env",       "A=1",
                                     "--env",       "B=x=y",
                                     "--hostname",  "h1",
                                     "--net",       "host",
                                     "--memory",    "512M",
                                     "--cpus",      "1.5",
                                     "--timeout",   "30",
                                     "--snapshots", "pre",
                                     "--marshal",   "out/.m",
                                     "--",          "python3",
                                     "-c",          "print(1)"}));
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_FALSE(o->no_agent);
  EXPECT_EQ(o->agent_socket, "/tmp/a.sock");
  EXPECT_EQ(o->pipeline, "train");
  EXPECT_EQ(o->run, "r1");
  EXPECT_EQ(o->step, "prep");
  ASSERT_EQ(o->volumes.size(), 2u);
  EXPECT_EQ(o->volumes[0].name, "workspace");
  EXPECT_EQ(o->volumes[0].target, "/home/jovyan");
  EXPECT_FALSE(o->volumes[0].read_only);
  EXPECT_EQ(o->volumes[1].name, "data");
  EXPECT_TRUE(o->volumes[1].read_only);
  EXPECT_EQ(o->workdir, "/home/jovyan");
  ASSERT_EQ(o->env.size(), 2u);
  EXPECT_EQ(o->env[1].first, "B");
  EXPECT_EQ(o->env[1].second, "x=y");
  EXPECT_EQ(o->hostname, "h1");
  EXPECT_EQ(o->net, NetMode::host);
  EXPECT_EQ(o->memory_bytes, 512ull << 20);
  EXPECT_EQ(o->cpus, 1.5);
  EXPECT_EQ(o->timeout_seconds, 30.0);
  EXPECT_TRUE(o->snapshots.pre);
  EXPECT_FALSE(o->snapshots.post);
  EXPECT_EQ(o->marshal, "out/.m");
  EXPECT_EQ(o->command, (Args{"python3", "-c", "print(1)"}));
}

TEST(ExecOptions, DefaultsAreTheDocumentedOnes) {
  auto o = parse_exec_options(named({"--", "true"}));
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->agent_socket, kDefaultAgentSocket);
  EXPECT_EQ(o->hostname, "prep");  // the step name
  EXPECT_EQ(o->net, NetMode::none);
  EXPECT_TRUE(o->snapshots.pre && o->snapshots.post);
  EXPECT_EQ(o->marshal, ".marshal");
  EXPECT_FALSE(o->timeout_seconds);
  EXPECT_FALSE(o->memory_bytes);
  // root with containerd's default capabilities, the host's / read-only,
  // a minimal /dev
  EXPECT_EQ(o->sandbox.uid, 0u);
  EXPECT_EQ(o->sandbox.gid, 0u);
  EXPECT_TRUE(o->sandbox.cap_add.empty());
  EXPECT_TRUE(o->sandbox.cap_drop.empty());
  EXPECT_FALSE(o->sandbox.rootfs);
  EXPECT_FALSE(o->sandbox.host_dev);
}

TEST(ExecOptions, SandboxOptionsLandInTheirFields) {
  auto o = parse_exec_options(
      named({"--user", "1000", "--cap-add", "NET_ADMIN", "--cap-add", "cap_sys_ptrace",
             "--cap-drop", "ALL", "--rootfs", "/srv/image", "--dev", "host", "--", "true"}));
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->sandbox.uid, 1000u);
  EXPECT_EQ(o->sandbox.gid, 1000u);  // GID defaults to UID
  EXPECT_EQ(o->sandbox.cap_add, (Args{"NET_ADMIN", "cap_sys_ptrace"}));
  EXPECT_EQ(o->sandbox.cap_drop, (Args{"ALL"}));
  EXPECT_EQ(o->sandbox.rootfs, "/srv/image");
  EXPECT_TRUE(o->sandbox.host_dev);
  o = parse_exec_options(named({"--user", "1000:100", "--", "true"}));
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->sandbox.gid, 100u);
}

TEST(ExecOptions, WordsAfterDoubleDashBelongToTheCommand) {
  auto o = parse_exec_options({"--no-agent", "--", "ls", "--help", "--volume", "x"});
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_FALSE(o->help);
  EXPECT_TRUE(o->volumes.empty());
  EXPECT_EQ(o->command, (Args{"ls", "--help", "--volume", "x"}));
}

TEST(ExecOptions, NoAgentNeedsNoNamesAndTakesHostDirectories) {
  auto o = parse_exec_options({"--no-agent", "--volume", "/srv/ws:/ws", "--", "true"});
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_TRUE(o->no_agent);
  EXPECT_EQ(o->pipeline, "no-agent");
  EXPECT_EQ(o->step, "step");
  EXPECT_EQ(o->volumes[0].name, "/srv/ws");
  // With the agent, a volume is a name, never a path; without, the reverse.
  EXPECT_FALSE(parse_exec_options(named({"--volume", "/srv/ws:/ws", "--", "true"})));
  EXPECT_FALSE(parse_exec_options({"--no-agent", "--volume", "ws:/ws", "--", "true"}));
}

TEST(ExecOptions, HelpNeedsNothingElse) {
  auto o = parse_exec_options({"--help"});
  ASSERT_TRUE(o);
  EXPECT_TRUE(o->help);
  EXPECT_NE(exec_help().find("124"), std::string::npos);
  EXPECT_NE(exec_help().find("HOSTDIR:/path[:ro]"), std::string::npos);
}

TEST(ExecOptions, NamesFollowTheOneRule) {
  for (const char* bad : {".", "..", "", "a/b", "with space",
                          "x234567890123456789012345678901234567890123456789012345678901234"}) {
    auto o = parse_exec_options({"--pipeline", "p", "--run", "r", "--step", bad, "--", "true"});
    EXPECT_FALSE(o) << "'" << bad << "'";
  }
  EXPECT_TRUE(
      parse_exec_options({"--pipeline", "p.1_x-y", "--run", "R-2", "--step", "s", "--", "true"}));
}

TEST(ExecOptions, EachBadInputIsOneLineWithoutANewline) {
  const std::vector<Args> bad = {
      named({"true"}),  // no "--"
      named({"--"}),    // no command
      named({"--volume", "ws", "--", "true"}),
      named({"--volume", "ws:/x:rx", "--", "true"}),
      named({"--env", "=v", "--", "true"}),
      named({"--net", "bridge", "--", "true"}),
      named({"--memory", "lots", "--", "true"}),
      named({"--memory", "0", "--", "true"}),
      named({"--cpus", "-1", "--", "true"}),
      named({"--timeout", "soon", "--", "true"}),
      named({"--snapshots", "during", "--", "true"}),
      named({"--bogus", "--", "true"}),
      {"--run", "r", "--step", "s", "--", "true"},  // no --pipeline without --no-agent
      {"--no-agent", "--agent", "/x.sock", "--", "true"},
      named({"--user", "root", "--", "true"}),
      named({"--user", "1000:", "--", "true"}),
      named({"--user", "-1", "--", "true"}),
      named({"--cap-add", "SUPERPOWER", "--", "true"}),
      named({"--cap-drop", "", "--", "true"}),
      named({"--rootfs", "relative/dir", "--", "true"}),
      named({"--dev", "all", "--", "true"}),
      named({"--env-file", "/nonexistent/env", "--", "true"}),
  };
  for (const auto& args : bad) {
    auto o = parse_exec_options(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    ASSERT_FALSE(o) << joined;
    auto m = o.error().message();
    EXPECT_FALSE(m.empty()) << joined;
    EXPECT_EQ(m.find('\n'), std::string::npos) << joined << "-> " << m;
  }
}

}  // namespace
}  // namespace stepsnap::runner
