#include "tests/support/stepsnapd_fixture.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "common/unique_fd.h"
#include "dm/dm_task.h"
#include "protocol/api_client.h"

namespace stepsnap::testing {

using json = nlohmann::json;

Output sh(const std::string& cmd) {
  char err_path[] = "/tmp/stepsnap-err-XXXXXX";
  int efd = mkstemp(err_path);
  ::close(efd);
  Output o;
  FILE* p = ::popen((cmd + " 2>" + err_path).c_str(), "r");
  if (!p) return o;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) o.out.append(buf, n);
  int status = ::pclose(p);
  o.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  std::ifstream e(err_path);
  o.err.assign(std::istreambuf_iterator<char>(e), {});
  ::unlink(err_path);
  return o;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

void StepsnapdFixture::SetUp() {
  if (::geteuid() != 0 || !exists("/sys/module/dm_thin_pool")) {
    GTEST_SKIP() << "needs root and dm-thin: run inside scripts/vm";
  }
  static int instance = 0;
  std::string unique = std::to_string(::getpid()) + "n" + std::to_string(++instance);
  dir_ = "/tmp/stepsnapd-test-" + unique;
  std::filesystem::create_directories(dir_ + "/mnt");
  pool_ = "t" + unique;
  if (long_pool_name_) pool_.resize(63, 'x');
  socket_ = dir_ + "/sock";
  bpf_pins_ = "/sys/fs/bpf/stepsnap-test-" + unique;
  start_daemon();
}

void StepsnapdFixture::TearDown() {
  for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) sh("umount " + *it);
  stop_daemon(SIGTERM);
  if (HasFailure()) std::cerr << "stepsnapd's log:\n" << read_file(log_path());
  // Unpinned, the tracer's programs detach and its maps go.
  if (!bpf_pins_.empty()) std::filesystem::remove_all(bpf_pins_);
  // Volumes outlive the daemon by design; the test removes them and the
  // pool (whose loop devices then detach by themselves).
  if (auto names = dm::list_devices()) {
    for (const auto& n : *names) {
      if (n.rfind(pool_ + "-vol-", 0) == 0) (void)dm::remove_device(n);
    }
  }
  (void)dm::remove_device(pool_ + "-pool");
}

pid_t StepsnapdFixture::launch(const std::string& notify) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::setenv("NOTIFY_SOCKET", notify.c_str(), 1);
  // Both streams to the log: a daemon that kept ctest's pipe open would make
  // ctest wait for it until the test's timeout whenever a test died early.
  if (!std::freopen(log_path().c_str(), "a", stderr)) ::_exit(126);
  if (!std::freopen(log_path().c_str(), "a", stdout)) ::_exit(126);
  std::vector<std::string> args = {"stepsnapd", "--state-dir",    dir_ + "/state", "--socket",
                                   socket_,     "--socket-group", socket_group_,   "--pool-name",
                                   pool_,       "--log-level",    "debug"};
  if (pool_args_.empty()) {
    args.insert(args.end(), {"--pool-loop-dir", dir_ + "/loop", "--pool-loop-data-size", data_size_,
                             "--pool-loop-metadata-size", "16M"});
  } else {
    args.insert(args.end(), pool_args_.begin(), pool_args_.end());
  }
  args.insert(args.end(), {"--bpf-pin-dir", pin_bpf_ ? bpf_pins_ : ""});
  // The HTTP view on any free loopback port, unless the test chooses: the
  // default port would collide between daemons of tests run in parallel.
  if (std::find(extra_args_.begin(), extra_args_.end(), "--http-listen") == extra_args_.end())
    args.insert(args.end(), {"--http-listen", "127.0.0.1:0"});
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(STEPSNAPD_PATH, argv.data());
  ::_exit(127);
}

void StepsnapdFixture::start_daemon() {
  std::string notify = dir_ + "/notify";
  ::unlink(notify.c_str());
  UniqueFd n(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", notify.c_str());
  ASSERT_EQ(::bind(n.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{ready_timeout_s_, 0};
  ::setsockopt(n.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  pid_ = launch(notify);
  ASSERT_GE(pid_, 0);
  char buf[256] = {};
  ssize_t got = ::recv(n.get(), buf, sizeof buf - 1, 0);
  ASSERT_GT(got, 0) << "no READY=1 from stepsnapd; its log:\n" << read_file(log_path());
  EXPECT_EQ(std::string(buf).rfind("READY=1", 0), 0u) << buf;
}

int StepsnapdFixture::start_daemon_expecting_failure() {
  pid_t pid = launch(dir_ + "/notify-unused");
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

int StepsnapdFixture::stop_daemon(int sig) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  int status = 0;
  // A daemon that does not stop fails the test, rather than leaving ctest
  // waiting for the test's timeout.
  pid_t done = 0;
  for (int i = 0; i < 600 && (done = ::waitpid(pid_, &status, WNOHANG)) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (done == 0) {
    ADD_FAILURE() << "stepsnapd did not stop within 30 s of signal " << sig << "; killed";
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  registrar_.reset();  // its daemon is gone; the next one gets a new connection
  return status;
}

Output StepsnapdFixture::ctl(const std::string& args) {
  return sh(std::string(STEPSNAPCTL_PATH) + " --socket " + socket_ + " " + args);
}

json StepsnapdFixture::call(const std::string& op, const json& args) {
  if (op == "step.register") {
    if (!registrar_) {
      auto c = protocol::ApiClient::connect(socket_);
      if (!c) {
        ADD_FAILURE() << c.error().message();
        return json();
      }
      registrar_.emplace(std::move(*c));
    }
    auto r = registrar_->call(op, args);
    if (!r) {
      ADD_FAILURE() << r.error().message();
      return json();
    }
    return *r;
  }
  auto c = protocol::ApiClient::connect(socket_);
  if (!c) {
    ADD_FAILURE() << c.error().message();
    return json();
  }
  auto r = c->call(op, args);
  if (!r) {
    ADD_FAILURE() << r.error().message();
    return json();
  }
  return *r;
}

json StepsnapdFixture::ok(const std::string& op, const json& args) {
  json r = call(op, args);
  EXPECT_TRUE(r.value("ok", false)) << op << ": " << r.dump();
  return r.value("result", json::object());
}

std::vector<json> StepsnapdFixture::events() {
  std::vector<json> out;
  auto c = protocol::ApiClient::connect(socket_);
  if (!c) return out;
  if (!c->send("events.subscribe", {{"since", 0}, {"follow", false}})) return out;
  auto first = c->read();
  if (!first || !first->value("ok", false)) return out;
  std::uint64_t last = (*first)["result"]["last_seq"];
  std::uint64_t seen = 0;
  while (seen < last) {
    auto line = c->read();
    if (!line || !line->contains("event")) break;
    out.push_back((*line)["event"]);
    seen = out.back()["seq"];
  }
  return out;
}

std::vector<json> StepsnapdFixture::events_of(const std::string& type) {
  std::vector<json> out;
  for (auto& e : events()) {
    if (e.value("type", "") == type) out.push_back(e);
  }
  return out;
}

json StepsnapdFixture::wait_step_over(const std::string& pipeline, const std::string& run,
                                      const std::string& step) {
  json st;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  do {
    st = ok("step.status", {{"pipeline", pipeline}, {"run", run}, {"step", step}});
    if (st.value("state", "") == "finished" || st.value("state", "") == "failed") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (std::chrono::steady_clock::now() < deadline);
  return st;
}

void StepsnapdFixture::mount(const std::string& dev, const std::string& where) {
  std::filesystem::create_directories(where);
  auto r = sh("mount " + dev + " " + where);
  ASSERT_EQ(r.rc, 0) << r.err;
  mounts_.push_back(where);
}

std::string StepsnapdFixture::mount_snapshot(const std::string& snapshot) {
  std::string name = "view-" + std::to_string(mounts_.size()) + "-" + snapshot;
  if (name.size() > 63) name.resize(63);
  json clone = ok("clone.create", {{"snapshot", snapshot}, {"name", name}});
  std::string where = dir_ + "/mnt/" + name;
  std::filesystem::create_directories(where);
  auto r = sh("mount -o ro " + clone.value("path", "?") + " " + where);
  EXPECT_EQ(r.rc, 0) << r.err;
  if (r.rc == 0) mounts_.push_back(where);
  return where;
}

std::string StepsnapdFixture::make_volume(
    const std::string& name, const std::vector<std::pair<std::string, std::string>>& files) {
  json vol =
      ok("volume.create", {{"name", name}, {"size_bytes", 64 << 20}, {"filesystem", "ext4"}});
  std::string dev = vol.value("path", "");
  EXPECT_FALSE(dev.empty()) << vol.dump();
  std::string where = dir_ + "/mnt/fill-" + name;
  std::filesystem::create_directories(where);
  EXPECT_EQ(sh("mount " + dev + " " + where).rc, 0);
  for (const auto& [path, contents] : files) {
    std::filesystem::create_directories(std::filesystem::path(where + "/" + path).parent_path());
    std::ofstream(where + "/" + path) << contents;
  }
  EXPECT_EQ(sh("umount " + where).rc, 0);
  return dev;
}

int StepsnapdFixture::http_port() const {
  const std::string log = read_file(log_path());
  const std::string marker = "HTTP view on http://";
  auto at = log.rfind(marker);
  if (at == std::string::npos) return -1;
  auto slash = log.find('/', at + marker.size());
  auto colon = log.rfind(':', slash);
  if (slash == std::string::npos || colon == std::string::npos || colon < at) return -1;
  return std::stoi(log.substr(colon + 1, slash - colon - 1));
}

}  // namespace stepsnap::testing
