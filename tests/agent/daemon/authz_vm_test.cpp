// Least privilege on a real stepsnapd in the scripts/vm guest (label vm),
// issue #15: each attack of the issue tried by a member of the socket group
// (a real uid with the group as a supplementary group, connecting to the
// real socket) and refused; root's own paths still work.
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <filesystem>
#include <set>

#include "dm/dm_task.h"
#include "protocol/api_client.h"
#include "runner/exec/cgroup.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent::vmtest {
namespace {

using namespace stepsnap::testing;
using json = nlohmann::json;

constexpr gid_t kUsers = 100;       // "users" in /etc/group: the socket group here
constexpr uid_t kMember = 47111;    // a member of it
constexpr uid_t kStranger = 47112;  // in no group of ours

// One request as uid (with supplementary groups), from a child process on
// its own connection; the answer line, or {"connect": error}.
json call_as(uid_t uid, std::vector<gid_t> groups, const std::string& socket, const std::string& op,
             const json& args) {
  int out[2];
  if (::pipe(out) != 0) return nullptr;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(out[0]);
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0)
      ::_exit(121);
    json answer;
    auto c = protocol::ApiClient::connect(socket);
    if (!c) {
      answer = {{"connect", c.error().message()}};
    } else {
      auto r = c->call(op, args);
      answer = r ? *r : json{{"read", r.error().message()}};
    }
    std::string text = answer.dump();
    (void)!::write(out[1], text.data(), text.size());
    ::_exit(0);
  }
  ::close(out[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  ::waitpid(pid, nullptr, 0);
  return json::parse(text, nullptr, false);
}

std::string code_of(const json& answer) {
  if (answer.value("ok", false)) return "ok";
  if (answer.contains("error")) return answer["error"].value("code", "?");
  return answer.dump();
}

class AuthzVm : public StepsnapdFixture {
 protected:
  AuthzVm() { socket_group_ = "users"; }
  json member(const std::string& op, const json& args) {
    return call_as(kMember, {kUsers}, socket_, op, args);
  }
  std::set<std::string> names() {
    std::set<std::string> out;
    for (const auto& d : ok("volume.list", json::object())["volumes"]) out.insert(d["name"]);
    for (const auto& d : ok("snapshot.list", json::object())["snapshots"]) out.insert(d["name"]);
    return out;
  }
};

TEST_F(AuthzVm, AMemberReadsAndManagesOnlyWhatItMade) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  ok("snapshot.create", {{"volume", "ws"}, {"name", "ws.s"}});
  auto before = names();

  EXPECT_EQ(code_of(member("volume.list", json::object())), "ok");
  EXPECT_EQ(code_of(member("snapshot.show", {{"name", "ws.s"}})), "ok");
  for (auto [op, args] : std::vector<std::pair<std::string, json>>{
           {"volume.delete", {{"name", "ws"}}},
           {"snapshot.delete", {{"name", "ws.s"}}},
           {"snapshot.create", {{"volume", "ws"}, {"name", "mine.of.ws"}}},
           {"clone.create", {{"snapshot", "ws.s"}, {"name", "copy"}}},
           {"restore", {{"snapshot", "ws.s"}, {"name", "copy2"}}},
           {"snapshot.label", {{"name", "ws.s"}, {"labels", {{"keep", "yes"}}}}}}) {
    json r = member(op, args);
    EXPECT_EQ(code_of(r), "forbidden") << op << ": " << r.dump();
    EXPECT_NE(r["error"].value("message", "").find("only its owner (uid 0) or root"),
              std::string::npos)
        << r.dump();
  }
  EXPECT_EQ(names(), before) << "a refused op changed something";

  // What the member makes is theirs, end to end.
  json made = member("volume.create", {{"name", "mine"}, {"size_bytes", 16 << 20}});
  ASSERT_EQ(code_of(made), "ok") << made.dump();
  EXPECT_EQ(made["result"]["owner_uid"], kMember);
  json snap = member("snapshot.create", {{"volume", "mine"}, {"name", "mine.s"}});
  ASSERT_EQ(code_of(snap), "ok") << snap.dump();
  EXPECT_EQ(snap["result"]["owner_uid"], kMember);
  EXPECT_EQ(code_of(member("clone.create", {{"snapshot", "mine.s"}, {"name", "mine.c"}})), "ok");
  json labelled =
      member("snapshot.label", {{"name", "mine.s"}, {"labels", {{"metric.r2", "0.9"}}}});
  ASSERT_EQ(code_of(labelled), "ok") << labelled.dump();
  EXPECT_EQ(labelled["result"]["labels"]["metric.r2"], "0.9");
  EXPECT_EQ(code_of(member("volume.delete", {{"name", "mine.c"}})), "ok");
  EXPECT_EQ(code_of(member("snapshot.delete", {{"name", "mine.s"}})), "ok");
  // Root may delete anything.
  ok("volume.delete", {{"name", "mine"}});
}

TEST_F(AuthzVm, AnUnrelatedUserCannotEvenConnect) {
  json r = call_as(kStranger, {}, socket_, "volume.list", json::object());
  EXPECT_TRUE(r.contains("connect")) << r.dump();
}

TEST_F(AuthzVm, AMemberCannotRegisterAStepOnAnyCgroupNorAskForARunClone) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  auto victim = runner::Cgroup::create("stepsnap-authz-victim/v-" + std::to_string(::getpid()));
  ASSERT_TRUE(victim) << victim.error().message();
  for (const std::string& cgroup : {std::string("/sys/fs/cgroup/system.slice"), victim->path()}) {
    json r = member(
        "step.register",
        {{"pipeline", "p"}, {"run", "r"}, {"step", "s"}, {"cgroup", cgroup}, {"volumes", {"ws"}}});
    EXPECT_EQ(code_of(r), "forbidden") << r.dump();
  }
  json r = member("run.clone", {{"pipeline", "p"}, {"run", "r"}, {"volume", "ws"}});
  EXPECT_EQ(code_of(r), "forbidden") << r.dump();
  EXPECT_TRUE(ok("volume.list", json::object())["volumes"].size() == 1u) << "no clone was made";
}

TEST_F(AuthzVm, RootsStepCgroupMustBeAnEmptyOneBeneathStepsnap) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  auto reg = [&](const std::string& step, const std::string& cgroup) {
    return call("step.register", {{"pipeline", "p"},
                                  {"run", "r"},
                                  {"step", step},
                                  {"cgroup", cgroup},
                                  {"volumes", {"ws"}},
                                  {"policy", "none"}});
  };
  const std::string tag = std::to_string(::getpid());
  auto victim = runner::Cgroup::create("stepsnap-authz-victim/root-" + tag);
  ASSERT_TRUE(victim) << victim.error().message();
  json outside = reg("outside", victim->path());
  EXPECT_EQ(code_of(outside), "forbidden") << outside.dump();
  EXPECT_NE(outside["error"].value("message", "").find("must be beneath"), std::string::npos)
      << outside.dump();

  auto busy = runner::Cgroup::create("stepsnap/authz-test/busy-" + tag);
  ASSERT_TRUE(busy) << busy.error().message();
  pid_t sleeper = ::fork();
  if (sleeper == 0) {
    ::pause();
    ::_exit(0);
  }
  ASSERT_TRUE(busy->add_process(sleeper));
  json populated = reg("busy", busy->path());
  EXPECT_EQ(code_of(populated), "busy") << populated.dump();
  EXPECT_EQ(::kill(sleeper, 0), 0) << "the refused cgroup's process was touched";
  ::kill(sleeper, SIGKILL);
  ::waitpid(sleeper, nullptr, 0);

  auto fresh = runner::Cgroup::create("stepsnap/authz-test/ok-" + tag);
  ASSERT_TRUE(fresh) << fresh.error().message();
  json good = reg("ok", fresh->path());
  EXPECT_EQ(code_of(good), "ok") << good.dump();
  EXPECT_EQ(good["result"]["cgroup_id"], fresh->id());
}

TEST_F(AuthzVm, ACloneLabelledLikeARunsCloneIsNeverHandedOutAsIt) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  ok("snapshot.create", {{"volume", "ws"}, {"name", "ws.s"}});
  // The member plants "p.r.ws", labelled exactly like run p/r's clone of ws.
  ASSERT_EQ(code_of(member("volume.create", {{"name", "m"}, {"size_bytes", 16 << 20}})), "ok");
  ASSERT_EQ(code_of(member("snapshot.create", {{"volume", "m"}, {"name", "m.s"}})), "ok");
  json planted =
      member("clone.create", {{"snapshot", "m.s"},
                              {"name", "p.r.ws"},
                              {"labels", {{"pipeline", "p"}, {"run", "r"}, {"volume", "ws"}}}});
  ASSERT_EQ(code_of(planted), "ok") << planted.dump();

  // Root's runner asks for run p/r's clone of ws: refused, not the plant.
  json r = call("run.clone", {{"pipeline", "p"}, {"run", "r"}, {"volume", "ws"}});
  EXPECT_EQ(code_of(r), "exists") << r.dump();
  EXPECT_NE(r["error"].value("message", "").find("owner uid 47111"), std::string::npos) << r.dump();
  EXPECT_FALSE(r.contains("result"));

  // Another run gets a real clone, marked as the run's, the same each time.
  json first = ok("run.clone", {{"pipeline", "p"}, {"run", "r2"}, {"volume", "ws"}});
  EXPECT_EQ(first["run_clone"], (json{{"pipeline", "p"}, {"run", "r2"}, {"volume", "ws"}}));
  EXPECT_EQ(first["owner_uid"], 0);
  json again = ok("run.clone", {{"pipeline", "p"}, {"run", "r2"}, {"volume", "ws"}});
  EXPECT_EQ(again["id"], first["id"]);
  // ... which the member cannot delete.
  EXPECT_EQ(code_of(member("volume.delete", {{"name", "p.r2.ws"}})), "forbidden");
}

TEST_F(AuthzVm, AMovedCatalogNeverLeadsToAFormattedPool) {
  ok("volume.create", {{"name", "keep"}, {"size_bytes", 16 << 20}});
  stop_daemon(SIGTERM);
  // As after a reboot: no device left, the loop files still there.
  ASSERT_TRUE(dm::remove_device(pool_ + "-vol-keep"));
  ASSERT_TRUE(dm::remove_device(pool_ + "-pool"));
  std::filesystem::rename(dir_ + "/state", dir_ + "/state.moved");

  int status = start_daemon_expecting_failure();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  std::string log = read_file(log_path());
  EXPECT_NE(log.find("already holds a thin pool"), std::string::npos) << log;
  EXPECT_NE(log.find("--format-pool"), std::string::npos) << log;

  // Asked for on the command line, the pool is formatted: a new, empty one.
  extra_args_.push_back("--format-pool");
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  EXPECT_TRUE(ok("volume.list", json::object())["volumes"].empty());
}

TEST_F(AuthzVm, AnExistingSocketDirectoryKeepsItsMode) {
  stop_daemon(SIGTERM);
  ASSERT_EQ(::chmod(dir_.c_str(), 01733), 0);
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01733u) << "the daemon chmodded a directory it did not make";
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
}

}  // namespace
}  // namespace stepsnap::agent::vmtest
