// The step tracer against the real kernel: steps are real processes run in
// real cgroup v2 directories, and each test asserts on what the agent would
// observe (events, exit statuses, a marker file on disk).
//
// How a step is started: fork; the child blocks on a pipe; the parent moves
// it into the step's cgroup; then the child execs. So the step's first exec
// already happens inside the cgroup, as with the runner.
#include "bpf/step_tracer.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/types.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bpf/tracer.h"
#include "common/cgroup_files.h"
#include "common/unique_fd.h"
#include "runner/exec/cgroup.h"

namespace stepsnap::bpf {
namespace {

using namespace std::chrono_literals;
using runner::Cgroup;

std::string unique_name(const std::string& what) {
  return "stepsnap-test/bpf-" + std::to_string(getpid()) + "-" + what;
}

Cgroup make_cgroup(const std::string& what) {
  auto cg = Cgroup::create(unique_name(what));
  if (!cg) throw std::runtime_error(cg.error().message());
  return std::move(*cg);
}

// A forked child, stopped on a pipe until go() moves it into a cgroup and
// lets it run `body` (which execs or exits).
class Pending {
 public:
  template <typename Body>
  explicit Pending(Body body) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    pid_ = fork();
    if (pid_ == 0) {
      ::close(p[1]);
      char c;
      if (::read(p[0], &c, 1) != 1) _exit(126);
      body();
      _exit(127);
    }
    ::close(p[0]);
    go_fd_ = p[1];
  }
  Pending(const Pending&) = delete;
  Pending& operator=(const Pending&) = delete;
  // Closing the pipe unreleased makes the child exit without running body.
  ~Pending() {
    if (go_fd_ >= 0) ::close(go_fd_);
  }
  pid_t pid() const { return pid_; }
  void go(const Cgroup& cg) {
    auto st = cg.add_process(pid_);
    if (!st) throw std::runtime_error(st.error().message());
    if (::write(go_fd_, "x", 1) != 1) throw std::runtime_error("write go pipe");
    ::close(go_fd_);
    go_fd_ = -1;
  }
  // The raw wait status.
  int wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    return status;
  }
  // The raw wait status, or nullopt if it is still alive after `limit` (it
  // is then killed and reaped, so a test that fails never hangs).
  std::optional<int> wait_for(std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) return status;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    return std::nullopt;
  }

 private:
  pid_t pid_ = -1;
  int go_fd_ = -1;
};

Pending shell(const std::string& script) {
  return Pending([script] { execl("/bin/sh", "sh", "-c", script.c_str(), nullptr); });
}

class StepTracerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = StepTracer::open();
    ASSERT_TRUE(t) << t.error().message();
    tracer_.emplace(std::move(*t));
  }

  std::uint64_t watch(const Cgroup& cg, WatchOptions opts = {}) {
    auto id = tracer_->watch(cg.path(), opts);
    if (!id) throw std::runtime_error(id.error().message());
    return *id;
  }

  // Polls, collecting every event, until pred(events) or the timeout.
  template <typename Pred>
  bool poll_until(Pred pred, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred(events_)) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      auto r = tracer_->poll(50ms, [&](const Event& e) { events_.push_back(e); });
      if (!r) ADD_FAILURE() << r.error().message();
    }
    return true;
  }
  bool poll_until_end(std::uint64_t id, std::chrono::milliseconds timeout = 10s) {
    return poll_until([&](auto&) { return count(EventType::step_end, id) > 0; }, timeout);
  }
  // Collects anything still coming for a while (to prove nothing more comes).
  void drain(std::chrono::milliseconds d = 200ms) {
    poll_until([](auto&) { return false; }, d);
  }

  std::vector<Event> of(EventType type, std::uint64_t id) const {
    std::vector<Event> out;
    for (const auto& e : events_)
      if (e.type == type && e.cgroup_id == id) out.push_back(e);
    return out;
  }
  std::size_t count(EventType type, std::uint64_t id) const { return of(type, id).size(); }

  std::optional<StepTracer> tracer_;
  std::vector<Event> events_;
};

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

char proc_state(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = stat.rfind(')');
  return close == std::string::npos ? '?' : stat[close + 2];
}

TEST_F(StepTracerTest, HoldAtFirstExecStopsTheStepBeforeItsFirstInstruction) {
  Cgroup cg = make_cgroup("hold");
  std::string marker = "/tmp/stepsnap-bpf-marker-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  auto id = watch(cg, {.hold_first_exec = true});

  // touch's first act is to create the marker.
  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(cg);
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::exec, id) > 0; }));
  Event exec = of(EventType::exec, id)[0];
  EXPECT_TRUE(exec.held);
  EXPECT_TRUE(exec.main);
  EXPECT_EQ(exec.tgid, static_cast<std::uint32_t>(step.pid()));
  EXPECT_EQ(exec.filename, "/usr/bin/touch");
  EXPECT_EQ(exec.argv, (std::vector<std::string>{"touch", marker}));

  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(exists(marker)) << "the held step ran before it was released";
  EXPECT_EQ(proc_state(step.pid()), 'T');

  ASSERT_TRUE(tracer_->release(id));
  auto again = tracer_->release(id);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().err, EALREADY);

  ASSERT_TRUE(poll_until_end(id));
  int status = step.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(exists(marker));
  EXPECT_EQ(count(EventType::hold_released, id), 1u);
  EXPECT_EQ(count(EventType::hold_timeout, id), 0u);
  ::unlink(marker.c_str());
}

TEST_F(StepTracerTest, ReleaseWithNothingHeldIsRefused) {
  Cgroup cg = make_cgroup("nohold");
  auto id = watch(cg, {.hold_first_exec = true});
  auto r = tracer_->release(id);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err, EINVAL);
}

TEST_F(StepTracerTest, UnreleasedHoldIsReleasedAtTheTimeout) {
  Cgroup cg = make_cgroup("timeout");
  std::string marker = "/tmp/stepsnap-bpf-timeout-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  auto id = watch(
      cg, {.hold_first_exec = true, .hold_timeout = 500ms, .on_hold_timeout = HoldExpiry::release});

  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(cg);
  ASSERT_TRUE(poll_until_end(id));
  auto exec = of(EventType::exec, id);
  auto timeout = of(EventType::hold_timeout, id);
  ASSERT_EQ(exec.size(), 1u);
  ASSERT_EQ(timeout.size(), 1u);
  EXPECT_TRUE(exec[0].held);
  EXPECT_EQ(timeout[0].tgid, static_cast<std::uint32_t>(step.pid()));
  EXPECT_GE(timeout[0].mono_ns - exec[0].mono_ns, 450'000'000u);
  EXPECT_TRUE(WIFEXITED(step.wait()));
  EXPECT_TRUE(exists(marker));
  ::unlink(marker.c_str());
}

// The agent's watch: an unreleased hold ends with the process killed, never
// resumed, so the step cannot run without its pre-snapshot.
TEST_F(StepTracerTest, UnreleasedHoldIsKilledAtTheTimeoutByDefault) {
  Cgroup cg = make_cgroup("timeout-kill");
  std::string marker = "/tmp/stepsnap-bpf-timeout-kill-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  auto id = watch(cg, {.hold_first_exec = true, .hold_timeout = 300ms});
  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(cg);
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::hold_timeout, id) > 0; }));
  auto status = step.wait_for(10s);
  ASSERT_TRUE(status) << "the held step was neither killed nor resumed";
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
  EXPECT_FALSE(exists(marker)) << "the step ran after its hold timed out";
  EXPECT_EQ(to_json(of(EventType::hold_timeout, id)[0])["action"], "killed");
  EXPECT_EQ(tracer_->release(id).error().err, EALREADY);
}

// Anyone allowed to signal the step (its session, a shell's fg) can send
// SIGCONT. A held step continued that way is killed by the kernel side on
// its way back to user space: its program never runs an instruction.
TEST_F(StepTracerTest, HeldStepContinuedFromOutsideIsKilledBeforeItsFirstInstruction) {
  Cgroup cg = make_cgroup("cont");
  std::string marker = "/tmp/stepsnap-bpf-cont-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  auto id = watch(cg, {.hold_first_exec = true, .hold_timeout = 60s});
  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(cg);
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::exec, id) > 0; }));
  ASSERT_TRUE(of(EventType::exec, id)[0].held);
  // Stopped for sure before the SIGCONT, so this is the continue of a stop.
  for (int i = 0; i < 200 && proc_state(step.pid()) != 'T'; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(proc_state(step.pid()), 'T');
  ASSERT_EQ(::kill(step.pid(), SIGCONT), 0);

  auto status = step.wait_for(10s);
  ASSERT_TRUE(status) << "still alive after its hold was broken";
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
  EXPECT_FALSE(exists(marker)) << "a SIGCONT from outside ran the held step";
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::hold_broken, id) > 0; }));
  auto broken = of(EventType::hold_broken, id);
  ASSERT_EQ(broken.size(), 1u);
  EXPECT_EQ(broken[0].tgid, static_cast<std::uint32_t>(step.pid()));
  auto r = tracer_->release(id);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err, ECANCELED);
  ASSERT_TRUE(poll_until_end(id));
  EXPECT_EQ(count(EventType::hold_released, id), 0u);
  ::unlink(marker.c_str());
}

// A SIGCONT that arrives after the release is no broken hold.
TEST_F(StepTracerTest, SigcontAfterTheReleaseIsHarmless) {
  Cgroup cg = make_cgroup("cont-after");
  auto id = watch(cg, {.hold_first_exec = true});
  Pending step = shell("kill -CONT $$; exit 4");
  step.go(cg);
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::exec, id) > 0; }));
  ASSERT_TRUE(tracer_->release(id));
  ASSERT_TRUE(poll_until_end(id));
  EXPECT_EQ(WEXITSTATUS(step.wait()), 4);
  EXPECT_EQ(count(EventType::hold_broken, id), 0u);
}

// The hold's record is reserved before the SIGSTOP: with the ring full, the
// first exec is killed (fail closed) instead of being stopped with nobody
// told, and the lost record still comes out as a hold_lost.
TEST_F(StepTracerTest, HoldWhoseRecordCannotBeWrittenKillsTheStepAndIsReported) {
  auto small =
      StepTracer::open({.ring_bytes = static_cast<std::uint32_t>(::sysconf(_SC_PAGESIZE))});
  ASSERT_TRUE(small) << small.error().message();
  tracer_.emplace(std::move(*small));
  // Fill the ring: a chatty step nobody polls for.
  Cgroup noisy = make_cgroup("fill");
  watch(noisy);
  Pending filler = shell("i=0; while [ $i -lt 20 ]; do /bin/true & i=$((i+1)); done; wait");
  filler.go(noisy);
  ASSERT_EQ(filler.wait(), 0);

  Cgroup cg = make_cgroup("lost");
  std::string marker = "/tmp/stepsnap-bpf-lost-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  auto id = watch(cg, {.hold_first_exec = true, .hold_timeout = 60s});
  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(cg);
  auto status = step.wait_for(10s);
  ASSERT_TRUE(status) << "held with its record lost: stopped forever";
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
  EXPECT_FALSE(exists(marker));
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::hold_lost, id) > 0; }));
  EXPECT_EQ(count(EventType::hold_lost, id), 1u);
  EXPECT_EQ(count(EventType::exec, id), 0u) << "a held exec was reported for a killed step";
  ASSERT_TRUE(poll_until_end(id));
  ::unlink(marker.c_str());
}

// The tracer going away (the agent stopping) never resumes a held step.
TEST_F(StepTracerTest, ClosingTheTracerLeavesAHeldStepStopped) {
  Cgroup cg = make_cgroup("close");
  std::string marker = "/tmp/stepsnap-bpf-close-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  watch(cg, {.hold_first_exec = true});
  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(cg);
  ASSERT_TRUE(poll_until([&](auto&) { return !events_.empty() && events_[0].held; }));
  for (int i = 0; i < 200 && proc_state(step.pid()) != 'T'; ++i) std::this_thread::sleep_for(5ms);
  tracer_.reset();
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(proc_state(step.pid()), 'T') << "the tracer's end resumed a held step";
  EXPECT_FALSE(exists(marker));
  ::kill(step.pid(), SIGKILL);
  step.wait();
}

TEST_F(StepTracerTest, StepOfFiftyChildrenThatEachExecAndExitEndsOnce) {
  Cgroup cg = make_cgroup("fifty");
  auto id = watch(cg);
  // Only builtins besides /bin/true: exactly 50 forks and 51 execs.
  Pending step = shell("i=0; while [ $i -lt 50 ]; do /bin/true & i=$((i+1)); done; wait");
  step.go(cg);
  // Fifty execs under software emulation on a loaded machine can take
  // longer than the default wait; the end must still come exactly once.
  ASSERT_TRUE(poll_until_end(id, 60s));
  drain();
  EXPECT_EQ(count(EventType::fork, id), 50u);
  EXPECT_EQ(count(EventType::exec, id), 51u);
  EXPECT_EQ(count(EventType::exit, id), 51u);
  EXPECT_EQ(count(EventType::step_end, id), 1u);
  EXPECT_EQ(count(EventType::lost, 0), 0u);
  EXPECT_EQ(events_.back().type, EventType::step_end);
  std::set<std::uint32_t> pids;
  for (const auto& e : of(EventType::exit, id)) pids.insert(e.tgid);
  EXPECT_EQ(pids.size(), 51u) << "one exit per process";
  auto end = of(EventType::step_end, id)[0];
  EXPECT_EQ(end.main_pid, static_cast<std::uint32_t>(step.pid()));
  ASSERT_TRUE(end.exit);
  EXPECT_EQ(end.exit->code, 0);
  EXPECT_EQ(step.wait(), 0);
}

TEST_F(StepTracerTest, BoundariesOnlyWatchCountsEveryProcessButReportsOnlyTheMainOne) {
  Cgroup cg = make_cgroup("boundaries");
  auto id = watch(cg, {.boundaries_only = true});
  // 50 short children, then one that outlives the main process by a second.
  Pending step = shell(
      "i=0; while [ $i -lt 50 ]; do /bin/true & i=$((i+1)); done; wait; "
      "sleep 1 & exit 3");
  step.go(cg);
  // Fifty execs under software emulation on a loaded machine can take
  // longer than the default wait; the end must still come exactly once.
  ASSERT_TRUE(poll_until_end(id, 60s));
  drain();
  EXPECT_EQ(count(EventType::fork, id), 0u);
  EXPECT_EQ(count(EventType::exec, id), 1u);
  ASSERT_EQ(count(EventType::exit, id), 1u);
  EXPECT_EQ(count(EventType::step_end, id), 1u);
  EXPECT_EQ(of(EventType::exec, id)[0].tgid, static_cast<std::uint32_t>(step.pid()));
  // Not reported, but counted: the end waits for the sleeper.
  auto main_exit = of(EventType::exit, id)[0];
  auto end = of(EventType::step_end, id)[0];
  EXPECT_TRUE(main_exit.main);
  EXPECT_GE(end.mono_ns - main_exit.mono_ns, 900'000'000u);
  ASSERT_TRUE(end.exit);
  EXPECT_EQ(end.exit->code, 3);
  EXPECT_EQ(WEXITSTATUS(step.wait()), 3);
}

TEST_F(StepTracerTest, OverflowingTheRingIsReportedAndStillEndsTheStep) {
  // A one-page ring holds a handful of records; nobody polls while the step
  // forks 50 children, so most records cannot be written.
  auto small =
      StepTracer::open({.ring_bytes = static_cast<std::uint32_t>(::sysconf(_SC_PAGESIZE))});
  ASSERT_TRUE(small) << small.error().message();
  tracer_.emplace(std::move(*small));
  Cgroup cg = make_cgroup("overflow");
  auto id = watch(cg);
  Pending step = shell("i=0; while [ $i -lt 50 ]; do /bin/true & i=$((i+1)); done; wait");
  step.go(cg);
  EXPECT_EQ(step.wait(), 0);
  ASSERT_TRUE(poll_until_end(id)) << "the step end must come, from the ring or cgroup.events";
  drain();
  std::uint64_t lost = 0;
  for (const auto& e : events_)
    if (e.type == EventType::lost) lost += e.lost;
  // 50 forks + 51 execs + 51 exits + 1 end were due; what is missing is counted.
  std::size_t delivered =
      count(EventType::fork, id) + count(EventType::exec, id) + count(EventType::exit, id);
  EXPECT_GT(lost, 0u);
  EXPECT_GE(delivered + lost, 152u);
  EXPECT_EQ(count(EventType::step_end, id), 1u);
}

TEST(StepTracerPrivileges, WithoutPrivilegesOpenSaysWhatIsMissing) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Root to nobody: the kernel clears every effective capability.
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(2);
    auto t = StepTracer::open({});
    std::string msg = t ? "opened" : t.error().message();
    (void)!::write(fds[1], msg.data(), msg.size());
    _exit(0);
  }
  ::close(fds[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof(buf))) > 0;) msg.append(buf, n);
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  EXPECT_NE(msg.find("CAP_BPF"), std::string::npos) << msg;
}

TEST_F(StepTracerTest, RingSizeThatIsNotAPowerOfTwoIsRefused) {
  auto bad = StepTracer::open({.ring_bytes = 5000});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().err, EINVAL);
}

TEST_F(StepTracerTest, ChildThatOutlivesTheMainProcessDelaysStepEnd) {
  Cgroup cg = make_cgroup("outlive");
  auto id = watch(cg);
  Pending step = shell("sleep 1 & exit 3");
  step.go(cg);
  ASSERT_TRUE(poll_until_end(id));
  auto end = of(EventType::step_end, id)[0];
  Event main_exit;
  for (const auto& e : of(EventType::exit, id))
    if (e.main) main_exit = e;
  ASSERT_EQ(main_exit.tgid, static_cast<std::uint32_t>(step.pid()));
  EXPECT_GE(end.mono_ns - main_exit.mono_ns, 900'000'000u);
  ASSERT_TRUE(end.exit);
  EXPECT_EQ(end.exit->code, 3) << "step end reports the main process, not the last one";
  EXPECT_EQ(WEXITSTATUS(step.wait()), 3);
}

TEST_F(StepTracerTest, DoubleForkedDaemonDelaysStepEnd) {
  Cgroup cg = make_cgroup("daemon");
  auto id = watch(cg);
  // The inner shell exits at once; its sleep is reparented away from the step.
  Pending step = shell("sh -c 'sleep 1 &'; exit 0");
  step.go(cg);
  ASSERT_TRUE(poll_until_end(id));
  auto end = of(EventType::step_end, id)[0];
  Event main_exit;
  for (const auto& e : of(EventType::exit, id))
    if (e.main) main_exit = e;
  ASSERT_NE(main_exit.tgid, 0u);
  EXPECT_GE(end.mono_ns - main_exit.mono_ns, 900'000'000u);
  EXPECT_EQ(end.comm, "sleep");
  EXPECT_EQ(step.wait(), 0);
}

TEST_F(StepTracerTest, ExitCodesAndSignalsOfTheMainProcess) {
  struct Case {
    std::string script;
    std::optional<int> code, signal;
  } cases[] = {
      {"exit 0", 0, {}}, {"exit 1", 1, {}}, {"exit 42", 42, {}}, {"kill -KILL $$", {}, SIGKILL}};
  int n = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.script);
    Cgroup cg = make_cgroup("code" + std::to_string(n++));
    auto id = watch(cg);
    Pending step = shell(c.script);
    step.go(cg);
    ASSERT_TRUE(poll_until_end(id));
    auto exits = of(EventType::exit, id);
    ASSERT_EQ(exits.size(), 1u);
    auto end = of(EventType::step_end, id)[0];
    for (const Event& e : {exits[0], end}) {
      ASSERT_TRUE(e.exit);
      EXPECT_EQ(e.exit->code, c.code);
      EXPECT_EQ(e.exit->signal, c.signal);
    }
    int status = step.wait();
    if (c.code) {
      EXPECT_EQ(WEXITSTATUS(status), *c.code);
    } else {
      EXPECT_EQ(WTERMSIG(status), *c.signal);
    }
    ASSERT_TRUE(tracer_->unwatch(id));
  }
}

TEST_F(StepTracerTest, TwoWatchedCgroupsNeverMixAndUnwatchedOnesAreSilent) {
  Cgroup a = make_cgroup("a");
  Cgroup b = make_cgroup("b");
  Cgroup quiet = make_cgroup("quiet");
  auto ida = watch(a);
  auto idb = watch(b);
  const std::string load = "i=0; while [ $i -lt 10 ]; do /bin/true & i=$((i+1)); done; wait";
  Pending pa = shell(load), pb = shell(load), pq = shell(load);
  pa.go(a);
  pb.go(b);
  pq.go(quiet);
  // And a process in no step cgroup at all.
  if (pid_t outside = fork(); outside == 0) {
    execl("/bin/true", "true", nullptr);
    _exit(127);
  } else {
    waitpid(outside, nullptr, 0);
  }
  ASSERT_TRUE(poll_until(
      [&](auto&) { return count(EventType::step_end, ida) && count(EventType::step_end, idb); }));
  pq.wait();
  drain();

  std::set<std::uint32_t> pids_a, pids_b;
  for (const auto& e : events_) {
    ASSERT_TRUE(e.cgroup_id == ida || e.cgroup_id == idb) << to_json(e).dump();
    if (e.type == EventType::step_end) continue;
    EXPECT_EQ(e.task_cgroup_id, e.cgroup_id) << to_json(e).dump();
    (e.cgroup_id == ida ? pids_a : pids_b).insert(e.tgid);
    EXPECT_NE(e.tgid, static_cast<std::uint32_t>(pq.pid()));
  }
  EXPECT_EQ(pids_a.size(), 11u);
  EXPECT_EQ(pids_b.size(), 11u);
  for (auto p : pids_a) EXPECT_EQ(pids_b.count(p), 0u);
  EXPECT_EQ(count(EventType::exec, ida), 11u);
  EXPECT_EQ(count(EventType::exec, idb), 11u);
  pa.wait();
  pb.wait();
}

TEST_F(StepTracerTest, ProcessesInDescendantCgroupsCountForTheWatchedAncestor) {
  Cgroup parent = make_cgroup("parent");
  auto inner = Cgroup::create(unique_name("parent") + "/inner");
  ASSERT_TRUE(inner) << inner.error().message();
  auto id = watch(parent);
  Pending step = shell("/bin/true; exit 5");
  step.go(*inner);
  ASSERT_TRUE(poll_until_end(id));
  auto execs = of(EventType::exec, id);
  ASSERT_EQ(execs.size(), 2u);
  for (const auto& e : execs) EXPECT_EQ(e.task_cgroup_id, inner->id());
  EXPECT_EQ(of(EventType::step_end, id)[0].exit->code, 5);
  step.wait();
}

// A pod (kubelet layout: one child cgroup per container): a sandbox there
// before the watch, one init container after it, then the step's container.
// Only that one is watched: held at its first exec, and its end is the
// step's end while the sandbox still runs.
TEST_F(StepTracerTest, PodWatchHoldsOnlyTheContainerMadeAfterTheSkippedOnes) {
  Cgroup pod = make_cgroup("pod");
  auto child = [&](const std::string& name) {
    auto cg = Cgroup::create(unique_name("pod") + "/" + name);
    if (!cg) throw std::runtime_error(cg.error().message());
    return std::move(*cg);
  };
  Cgroup sandbox = child("sandbox");
  Pending pause = shell("exec sleep 60");
  pause.go(sandbox);
  auto pod_id =
      tracer_->watch_pod(pod.path(), {.skip_children = 1, .container = {.hold_first_exec = true}});
  ASSERT_TRUE(pod_id) << pod_id.error().message();
  auto again = tracer_->watch_pod(pod.path(), {});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().err, EEXIST);

  // The init container's exec is not held: it runs to its end by itself.
  Cgroup init = child("init");
  Pending init_step = shell("exit 3");
  init_step.go(init);
  auto init_status = init_step.wait_for(10s);
  ASSERT_TRUE(init_status) << "the init container was held";
  EXPECT_EQ(WEXITSTATUS(*init_status), 3);

  Cgroup main = child("main");
  drain();
  auto picked = of(EventType::container, *pod_id);
  ASSERT_EQ(picked.size(), 1u);
  EXPECT_EQ(picked[0].task_cgroup_id, main.id());
  EXPECT_EQ(picked[0].filename, main.path());
  EXPECT_EQ(picked[0].error, 0);

  std::string marker = "/tmp/stepsnap-bpf-pod-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(main);
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::exec, main.id()) > 0; }));
  EXPECT_TRUE(of(EventType::exec, main.id())[0].held);
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(exists(marker)) << "the held container ran before it was released";
  ASSERT_TRUE(tracer_->release(main.id()));
  ASSERT_TRUE(poll_until_end(main.id()));
  EXPECT_TRUE(exists(marker));
  EXPECT_TRUE(WIFEXITED(step.wait()));
  // Nothing of the pod but its container was reported.
  for (const auto& e : events_)
    EXPECT_TRUE(e.cgroup_id == main.id() || e.type == EventType::container) << to_json(e).dump();
  ::kill(pause.pid(), SIGKILL);
  pause.wait();
  ::unlink(marker.c_str());
}

// Threads: one exit per process, not per thread. The leader leaves first; a
// later thread ends the process with exit_group(7). The process never execs:
// it is counted from its move into the cgroup, and named as main by pid.
TEST_F(StepTracerTest, MultithreadedProcessExitsOnceWithItsGroupExitCode) {
  Cgroup cg = make_cgroup("threads");
  Pending step([] {
    for (int i = 0; i < 3; ++i) {
      pthread_t t;
      pthread_create(
          &t, nullptr,
          [](void* arg) -> void* {
            usleep(100'000);
            if (arg) _exit(7);  // exit_group from a non-leader thread
            return nullptr;
          },
          i == 0 ? reinterpret_cast<void*>(1) : nullptr);
    }
    syscall(SYS_exit, 0);  // the leader thread alone
  });
  auto id = watch(cg, {.main_pid = step.pid()});
  step.go(cg);
  ASSERT_TRUE(poll_until_end(id));
  drain();
  auto exits = of(EventType::exit, id);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].tgid, static_cast<std::uint32_t>(step.pid()));
  EXPECT_TRUE(exits[0].main);
  auto end = of(EventType::step_end, id);
  ASSERT_EQ(end.size(), 1u);
  ASSERT_TRUE(end[0].exit);
  EXPECT_EQ(end[0].exit->code, 7);
  EXPECT_EQ(WEXITSTATUS(step.wait()), 7);
}

// A process that was in the cgroup before the watch began is invisible to the
// kernel side; cgroup.events populated 0 still ends the step.
TEST_F(StepTracerTest, CgroupEventsEndTheStepWhenTheKernelSideSawNothing) {
  Cgroup cg = make_cgroup("safety");
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  pid_t child = fork();
  if (child == 0) {
    char c;
    [[maybe_unused]] auto n = ::read(p[0], &c, 1);
    _exit(5);
  }
  ::close(p[0]);
  ASSERT_TRUE(cg.add_process(child));
  auto id = watch(cg);
  ASSERT_EQ(::write(p[1], "x", 1), 1);
  ::close(p[1]);
  ASSERT_TRUE(poll_until_end(id));
  auto end = of(EventType::step_end, id);
  ASSERT_EQ(end.size(), 1u);
  EXPECT_EQ(end[0].source, "cgroup.events");
  int status = 0;
  waitpid(child, &status, 0);
}

// A step that mounts a file system of its own in its own mount namespace
// (ext4 on a loop device over an image file), writes into it and exits
// without sync or umount. The exit tracepoint fires before the kernel tears
// that namespace down, flushes the file system into the image and lets the
// loop device go; step_end must come after all of that, so that a snapshot
// taken on it sees the bytes in the image.
TEST_F(StepTracerTest, StepEndComesOnlyOnceTheStepsOwnMountsAreFlushed) {
  if (std::system("command -v mkfs.ext4 unshare >/dev/null && test -e /dev/loop-control") != 0)
    GTEST_SKIP() << "needs mkfs.ext4, unshare and loop devices";
  std::string dir = "/tmp/stepsnap-bpf-" + std::to_string(getpid()) + "-mountns";
  std::filesystem::create_directories(dir + "/m");
  std::string img = dir + "/img";
  ASSERT_EQ(std::system(("truncate -s 48M " + img + " && mkfs.ext4 -q -F " + img).c_str()), 0);
  constexpr std::size_t kBytes = 32 << 20;

  Cgroup cg = make_cgroup("mountns");
  Pending step =
      shell("exec unshare -m sh -c 'mount -o loop " + img + " " + dir + "/m && head -c " +
            std::to_string(kBytes) + " /dev/zero | tr \"\\0\" T > " + dir + "/m/f'");
  auto id = watch(cg);
  step.go(cg);
  // What a snapshot taken on step_end would see: the image's bytes, read
  // through the same page cache the loop device wrote into.
  std::optional<std::size_t> written;
  std::optional<bool> populated;
  auto on_event = [&](const Event& e) {
    events_.push_back(e);
    if (e.type != EventType::step_end || e.cgroup_id != id || written) return;
    auto p = cgroup_populated(cg.path());
    populated = p && *p;
    std::ifstream in(img, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    written = static_cast<std::size_t>(std::count(bytes.begin(), bytes.end(), 'T'));
  };
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!written && std::chrono::steady_clock::now() < deadline) {
    auto r = tracer_->poll(50ms, on_event);
    if (!r) ADD_FAILURE() << r.error().message();
  }
  EXPECT_EQ(WEXITSTATUS(step.wait()), 0);
  ASSERT_TRUE(written) << "no step_end";
  EXPECT_FALSE(*populated) << "step_end before cgroup.events said populated 0";
  EXPECT_GE(*written, kBytes) << "the step's file system was not flushed into its image yet";
  std::filesystem::remove_all(dir);
}

// Pinned programs and maps (TracerOptions::pin_dir) outlive the tracer: what
// a restarted agent relies on. A private bpffs is mounted for each test, so
// nothing of another test or engineer is adopted.
class PinnedTracerTest : public StepTracerTest {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/stepsnap-bpffs-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    mnt_ = tmpl;
    ASSERT_EQ(std::system(("mount -t bpf bpf " + mnt_).c_str()), 0);
    pins_ = mnt_ + "/stepsnap";
    reopen();
  }
  void TearDown() override {
    tracer_.reset();
    // Unpinned, the links detach and the maps go.
    std::filesystem::remove_all(pins_);
    std::system(("umount " + mnt_).c_str());
    ::rmdir(mnt_.c_str());
  }
  // A new tracer on the same pins, as a restarted agent opens it.
  void reopen() {
    tracer_.reset();
    auto t = StepTracer::open({.pin_dir = pins_});
    ASSERT_TRUE(t) << t.error().message();
    tracer_.emplace(std::move(*t));
  }
  std::string mnt_, pins_;
};

TEST_F(PinnedTracerTest, AFreshTracerPinsAndAReopenedOneAdopts) {
  EXPECT_FALSE(tracer_->adopted());
  for (const char* pin : {"map_watched", "map_held", "map_events", "link_on_exec", "link_on_exit"})
    EXPECT_TRUE(exists(pins_ + "/" + pin)) << pin;
  reopen();
  EXPECT_TRUE(tracer_->adopted());
}

TEST_F(PinnedTracerTest, AHeldStepStaysHeldAndGuardedWhileNoTracerRuns) {
  Cgroup cg = make_cgroup("pin-guard");
  std::string marker = "/tmp/stepsnap-bpf-pin-guard-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  auto id = watch(cg, {.hold_first_exec = true});
  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(cg);
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::exec, id) > 0; }));
  for (int i = 0; i < 200 && proc_state(step.pid()) != 'T'; ++i) std::this_thread::sleep_for(5ms);
  tracer_.reset();  // the agent is gone; the pins stay
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(proc_state(step.pid()), 'T');
  // kill -CONT while no agent runs: the pinned guard still kills it before
  // its first instruction.
  ASSERT_EQ(::kill(step.pid(), SIGCONT), 0);
  auto status = step.wait_for(10s);
  ASSERT_TRUE(status) << "still alive after its hold was broken";
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
  EXPECT_FALSE(exists(marker)) << "a SIGCONT while no tracer ran let the held step run";

  reopen();
  auto a = tracer_->adopt(cg.path(), id, {.hold_first_exec = true});
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_TRUE(a->hold_broken);
  EXPECT_FALSE(a->held);
  EXPECT_EQ(tracer_->release(id).error().err, ECANCELED);
}

TEST_F(PinnedTracerTest, AReopenedTracerAdoptsAHeldStepAndReleasesIt) {
  Cgroup cg = make_cgroup("pin-adopt");
  std::string marker = "/tmp/stepsnap-bpf-pin-adopt-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  auto id = watch(cg, {.hold_first_exec = true});
  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(cg);
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::exec, id) > 0; }));
  reopen();
  events_.clear();
  auto a = tracer_->adopt(cg.path(), id, {.hold_first_exec = true});
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_TRUE(a->held);
  EXPECT_EQ(a->held_pid, static_cast<std::uint32_t>(step.pid()));
  EXPECT_FALSE(exists(marker));
  ASSERT_TRUE(tracer_->release(id));
  ASSERT_TRUE(poll_until_end(id));
  EXPECT_EQ(step.wait(), 0);
  EXPECT_TRUE(exists(marker));
  ::unlink(marker.c_str());
}

// The release is two steps: the held entry marked released, then SIGCONT.
// An agent killed between them (here: the first step done on the pinned map
// as release() does it, then the tracer gone without the second) leaves the
// task stopped and its entry marked; the next agent adopts it held and
// continues it. When release deleted the entry first, that task stayed
// stopped for good: no entry, so nothing told the next agent it was held.
TEST_F(PinnedTracerTest, AnAgentKilledMidReleaseLeavesTheStepForTheNextAgentToContinue) {
  Cgroup cg = make_cgroup("pin-midrelease");
  std::string marker = "/tmp/stepsnap-bpf-pin-midrelease-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  auto id = watch(cg, {.hold_first_exec = true});
  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(cg);
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::exec, id) > 0; }));
  for (int i = 0; i < 200 && proc_state(step.pid()) != 'T'; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(proc_state(step.pid()), 'T');

  {
    UniqueFd held(::bpf_obj_get((pins_ + "/map_held").c_str()));
    ASSERT_TRUE(held) << std::strerror(errno);
    __u32 key = static_cast<__u32>(step.pid());
    step_held h{};
    ASSERT_EQ(::bpf_map_lookup_elem(held.get(), &key, &h), 0) << std::strerror(errno);
    h.released = 1;
    ASSERT_EQ(::bpf_map_update_elem(held.get(), &key, &h, BPF_EXIST), 0) << std::strerror(errno);
  }
  tracer_.reset();  // killed before its SIGCONT; the pins stay
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(proc_state(step.pid()), 'T') << "nobody continued it";
  EXPECT_FALSE(exists(marker));

  reopen();
  events_.clear();
  auto a = tracer_->adopt(cg.path(), id, {.hold_first_exec = true});
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_TRUE(a->held) << "a task stopped with its release half done is still held";
  ASSERT_TRUE(tracer_->release(id));
  ASSERT_TRUE(poll_until_end(id));
  EXPECT_EQ(step.wait(), 0) << "continued by the release, not killed as a broken hold";
  EXPECT_TRUE(exists(marker));
  EXPECT_EQ(count(EventType::hold_broken, id), 0u);
  ::unlink(marker.c_str());
}

// A process that left the step's cgroup while no agent ran: a restarted
// agent knows of it only from the watch's escaped count (the record went to
// a ring nobody read). kill_counted() reaches it where the cgroup's kill
// does not: it kills every process the step's watch counts.
TEST_F(PinnedTracerTest, AProcessThatEscapedWhileNoTracerRanIsKilledByKillCounted) {
  Cgroup cg = make_cgroup("pin-escape");
  Cgroup outside = make_cgroup("pin-escape-out");
  auto id = watch(cg, {.boundaries_only = true});
  tracer_.reset();  // no agent from here; the pins stay
  Pending step = shell("echo $$ > " + outside.path() + "/cgroup.procs; exec sleep 100");
  step.go(cg);
  auto moved_out = [&] {
    std::ifstream in(outside.path() + "/cgroup.procs");
    pid_t p = 0;
    return static_cast<bool>(in >> p);
  };
  for (int i = 0; i < 400 && !moved_out(); ++i) std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(moved_out());

  reopen();
  auto a = tracer_->adopt(cg.path(), id, {.boundaries_only = true});
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_TRUE(a->escaped);
  auto killed = tracer_->kill_counted(id);
  ASSERT_TRUE(killed) << killed.error().message();
  EXPECT_EQ(*killed, 1);
  auto status = step.wait_for(10s);
  ASSERT_TRUE(status) << "the escaped process still runs";
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
}

// Registered while an agent ran, started and ended while none did: the
// pinned programs held the first exec; the reopened tracer finds it held,
// reads its exec from the ring, and after the release reports the end.
TEST_F(PinnedTracerTest, AStepStartedWhileNoTracerRunsIsHeldAndEndsAfterAdoption) {
  Cgroup cg = make_cgroup("pin-down");
  auto id = watch(cg, {.hold_first_exec = true});
  tracer_.reset();
  Pending step = shell("exit 5");
  step.go(cg);
  for (int i = 0; i < 400 && proc_state(step.pid()) != 'T'; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(proc_state(step.pid()), 'T') << "no tracer ran and the first exec was not held";

  reopen();
  auto a = tracer_->adopt(cg.path(), id, {.hold_first_exec = true});
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_TRUE(a->held);
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::exec, id) > 0; }));
  EXPECT_TRUE(of(EventType::exec, id)[0].held);
  ASSERT_TRUE(tracer_->release(id));
  ASSERT_TRUE(poll_until_end(id));
  EXPECT_EQ(WEXITSTATUS(step.wait()), 5);
  auto end = of(EventType::step_end, id);
  ASSERT_EQ(end.size(), 1u);
  ASSERT_TRUE(end[0].exit && end[0].exit->code);
  EXPECT_EQ(*end[0].exit->code, 5);
}

// A step that ended while no tracer ran, its end's record already read by
// the tracer that died: the kernel side's count still tells, once.
TEST_F(PinnedTracerTest, AStepEndCountedWhileNoTracerRanIsDeliveredOnceOnAdoption) {
  Cgroup cg = make_cgroup("pin-end");
  auto id = watch(cg);
  Pending step = shell("exit 3");
  step.go(cg);
  EXPECT_EQ(WEXITSTATUS(step.wait()), 3);
  // The dying tracer read the records (the step end among them) and did
  // nothing with them.
  ASSERT_TRUE(poll_until_end(id));
  reopen();
  events_.clear();
  auto a = tracer_->adopt(cg.path(), id, {});
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_TRUE(a->ended);
  ASSERT_TRUE(a->main_exit && a->main_exit->code);
  EXPECT_EQ(*a->main_exit->code, 3);
  ASSERT_TRUE(poll_until_end(id));
  drain();
  EXPECT_EQ(count(EventType::step_end, id), 1u);
}

TEST_F(PinnedTracerTest, AWatchNobodyAdoptsIsDroppedAndItsHeldTaskKilled) {
  Cgroup cg = make_cgroup("pin-drop");
  std::string marker = "/tmp/stepsnap-bpf-pin-drop-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  auto id = watch(cg, {.hold_first_exec = true});
  Pending step([&] { execl("/usr/bin/touch", "touch", marker.c_str(), nullptr); });
  step.go(cg);
  ASSERT_TRUE(poll_until([&](auto&) { return count(EventType::exec, id) > 0; }));
  reopen();
  EXPECT_EQ(tracer_->drop_unadopted(), 1);
  auto status = step.wait_for(10s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
  EXPECT_FALSE(exists(marker));
  EXPECT_EQ(tracer_->adopt(cg.path(), id, {}).error().err, ENOENT);
}

// A step's processes are counted by descent: one that leaves the step's
// cgroup is reported (escape) and still counted, and so are the children it
// makes outside; the cgroup emptying is then no step end.
TEST_F(StepTracerTest, AProcessThatLeavesTheCgroupIsReportedAndTheEndWaitsForItsChildren) {
  Cgroup cg = make_cgroup("escape");
  Cgroup outside = make_cgroup("escape-out");
  std::string marker = "/tmp/stepsnap-bpf-escape-" + std::to_string(getpid());
  ::unlink(marker.c_str());
  auto id = watch(cg, {.boundaries_only = true});
  Pending step = shell("echo $$ > " + outside.path() + "/cgroup.procs; (sleep 1; touch " + marker +
                       ") & exit 0");
  step.go(cg);
  ASSERT_TRUE(poll_until_end(id, 20s));
  EXPECT_TRUE(exists(marker)) << "the step ended while a child of its escaped process still ran";
  auto escapes = of(EventType::escape, id);
  ASSERT_EQ(escapes.size(), 1u);
  EXPECT_EQ(escapes[0].tgid, static_cast<std::uint32_t>(step.pid()));
  EXPECT_NE(escapes[0].task_cgroup_id, id) << "the escape names where it went";
  EXPECT_EQ(count(EventType::step_end, id), 1u);
  // Every process was counted (a process counted twice is no failure).
  EXPECT_EQ(count(EventType::untracked, id), 0u);
  step.wait();
  ::unlink(marker.c_str());
}

// Moving between the step's own sub-cgroups is no escape.
TEST_F(StepTracerTest, MovingWithinTheStepsCgroupsIsNoEscape) {
  Cgroup cg = make_cgroup("within");
  auto sub = Cgroup::create(unique_name("within") + "/sub");
  ASSERT_TRUE(sub) << sub.error().message();
  auto id = watch(cg);
  Pending step = shell("echo $$ > " + sub->path() + "/cgroup.procs; exit 0");
  step.go(cg);
  ASSERT_TRUE(poll_until_end(id));
  EXPECT_EQ(count(EventType::escape, id), 0u);
  step.wait();
}

// Fail closed: a process the kernel side has no room to count is reported.
TEST_F(StepTracerTest, AProcessTheProcessMapHasNoRoomForIsReported) {
  auto small = StepTracer::open({.proc_slots = 4});
  ASSERT_TRUE(small) << small.error().message();
  tracer_.emplace(std::move(*small));
  Cgroup cg = make_cgroup("untracked");
  auto id = watch(cg, {.boundaries_only = true});
  Pending step = shell("for i in 1 2 3 4 5 6 7 8; do sleep 0.3 & done; wait");
  step.go(cg);
  ASSERT_TRUE(poll_until_end(id, 20s));
  EXPECT_EQ(count(EventType::untracked, id), 1u);
  EXPECT_EQ(step.wait(), 0);
}

}  // namespace
}  // namespace stepsnap::bpf
