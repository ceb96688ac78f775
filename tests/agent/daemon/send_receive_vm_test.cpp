// Snapshots that travel (issue #18), inside the scripts/vm guest (label vm):
// two stepsnapd agents on two pools stand for two nodes. Node A is the
// fixture's daemon; node B a second stepsnapd with its own loop-file pool,
// state and socket. Streams go through stepsnapctl, piped or through files,
// as an operator would move them.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "dm/dm_task.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent::vmtest {
namespace {

using namespace stepsnap::testing;
using json = nlohmann::json;

const std::string kCtl = STEPSNAPCTL_PATH;

// A second stepsnapd: another node, with its own pool.
class Node {
 public:
  Node(std::string dir, std::string pool, std::string data_size)
      : dir_(std::move(dir)), pool_(std::move(pool)), size_(std::move(data_size)) {
    std::filesystem::create_directories(dir_ + "/mnt");
  }
  ~Node() {
    stop(SIGTERM);
    if (auto names = dm::list_devices()) {
      for (const auto& n : *names) {
        if (n.rfind(pool_ + "-", 0) == 0 && n != pool_ + "-pool") (void)dm::remove_device(n);
      }
    }
    (void)dm::remove_device(pool_ + "-pool");
  }
  std::string socket() const { return dir_ + "/sock"; }
  const std::string& pool() const { return pool_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  std::string ctl_cmd() const { return kCtl + " --socket " + socket(); }

  // Starts it and waits until it answers (60 s at most).
  void start() {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::string log = dir_ + "/stepsnapd.log";
      if (!std::freopen(log.c_str(), "a", stderr)) ::_exit(126);
      if (!std::freopen(log.c_str(), "a", stdout)) ::_exit(126);
      ::unsetenv("NOTIFY_SOCKET");
      std::vector<std::string> args = {"stepsnapd",
                                       "--state-dir",
                                       dir_ + "/state",
                                       "--socket",
                                       socket(),
                                       "--socket-group",
                                       "",
                                       "--pool-name",
                                       pool_,
                                       "--pool-loop-dir",
                                       dir_ + "/loop",
                                       "--pool-loop-data-size",
                                       size_,
                                       "--pool-loop-metadata-size",
                                       "16M",
                                       "--bpf-pin-dir",
                                       "",
                                       "--http-listen",
                                       "127.0.0.1:0"};
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(STEPSNAPD_PATH, argv.data());
      ::_exit(127);
    }
    for (int i = 0; i < 600; ++i) {
      if (sh(ctl_cmd() + " volume list").rc == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "node B did not answer within 60 s:\n" << read_file(dir_ + "/stepsnapd.log");
  }
  void stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  json ok(const std::string& op, const json& args) {
    auto c = protocol::ApiClient::connect(socket());
    EXPECT_TRUE(c) << c.error().message();
    if (!c) return json::object();
    auto r = c->request(op, args);
    EXPECT_TRUE(r) << op << ": " << r.error().message();
    return r ? *r : json::object();
  }
  std::string log() const { return read_file(dir_ + "/stepsnapd.log"); }

 private:
  std::string dir_, pool_, size_;
  pid_t pid_ = -1;
};

std::string sha256_of(const std::string& path) {
  auto r = sh("sha256sum " + path + " | cut -d' ' -f1");
  EXPECT_EQ(r.rc, 0) << r.err;
  return r.out;
}

// sha256 of every file under dir, with paths relative to it.
std::string file_sums(const std::string& dir) {
  auto r =
      sh("cd " + dir + " && find . -type f ! -path './lost+found/*' | sort | xargs -r sha256sum");
  EXPECT_EQ(r.rc, 0) << r.err;
  return r.out;
}

class SendReceive : public StepsnapdFixture {
 protected:
  SendReceive() { data_size_ = "1G"; }

  void start_b(const std::string& size = "1G") {
    b_.emplace(dir_ + "-b", pool_ + "b", size);
    b_->start();
  }
  void TearDown() override {
    for (auto it = b_mounts_.rbegin(); it != b_mounts_.rend(); ++it) sh("umount " + *it);
    if (b_ && HasFailure()) std::cerr << "node B's log:\n" << b_->log();
    b_.reset();
    StepsnapdFixture::TearDown();
  }

  // send on A piped into receive on B; returns receive's output.
  Output pipe_to_b(const std::string& send_args, const std::string& receive_args = "") {
    return sh(kCtl + " --socket " + socket_ + " snapshot send " + send_args + " | " +
              b_->ctl_cmd() + " snapshot receive " + receive_args);
  }
  Output send_to_file(const std::string& send_args, const std::string& file) {
    return sh(kCtl + " --socket " + socket_ + " snapshot send " + send_args + " -o " + file);
  }

  // A 256 MiB ext4 volume "ws" on A, mounted, with 8 files of 2 MiB.
  std::string make_workspace() {
    json vol =
        ok("volume.create", {{"name", "ws"}, {"size_bytes", 256 << 20}, {"filesystem", "ext4"}});
    ws_dev_ = vol.value("path", "");
    ws_ = dir_ + "/mnt/ws";
    std::filesystem::create_directories(ws_);
    mount(ws_dev_, ws_);
    auto r = sh("for i in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=" + ws_ +
                "/f$i bs=1M count=2 status=none || exit 1; done; sync");
    EXPECT_EQ(r.rc, 0) << r.err;
    return ws_dev_;
  }
  // Overwrites `mib` MiB of file f<n> in place and syncs.
  void change(int n, int mib) {
    auto r = sh("dd if=/dev/urandom of=" + ws_ + "/f" + std::to_string(n) +
                " bs=1M count=" + std::to_string(mib) + " conv=notrunc status=none && sync");
    EXPECT_EQ(r.rc, 0) << r.err;
  }

  // A's and B's copies of snapshot `name` are the same device, block for
  // block, and hold the same files.
  void expect_same(const std::string& name) {
    json a = ok("clone.create", {{"snapshot", name}, {"name", "cmp-a-" + name}});
    json b = b_->ok("restore", {{"snapshot", name}, {"name", "cmp-b-" + name}});
    const std::string da = a.value("path", "?"), db = b.value("path", "?");
    EXPECT_EQ(sha256_of(da), sha256_of(db)) << name << ": the devices differ";
    std::string ma = dir_ + "/mnt/cmp-a-" + name, mb = b_->dir() + "/mnt/cmp-b-" + name;
    std::filesystem::create_directories(ma);
    std::filesystem::create_directories(mb);
    ASSERT_EQ(sh("mount -o ro " + da + " " + ma).rc, 0);
    mounts_.push_back(ma);
    ASSERT_EQ(sh("mount -o ro " + db + " " + mb).rc, 0);
    b_mounts_.push_back(mb);
    std::string sums = file_sums(ma);
    EXPECT_NE(sums.find("./f8"), std::string::npos) << sums;
    EXPECT_EQ(sums, file_sums(mb)) << name << ": the files differ";
  }

  // B holds no snapshot named name, no half-received device, and its pool
  // uses what it used before (`used`).
  void expect_nothing_half_made(const std::string& name, std::uint64_t used) {
    json list = b_->ok("snapshot.list", json::object());
    for (const auto& s : list["snapshots"]) EXPECT_NE(s.value("name", ""), name) << s.dump();
    auto names = dm::list_devices();
    ASSERT_TRUE(names);
    for (const auto& n : *names) EXPECT_EQ(n.find("-recv-"), std::string::npos) << n;
    EXPECT_EQ(b_used(), used) << "blocks of a refused stream are still allocated";
  }
  std::uint64_t b_used() {
    json vols = b_->ok("volume.list", json::object());
    return vols["pool"].value("used_data_blocks", std::uint64_t{0});
  }

  std::optional<Node> b_;
  std::vector<std::string> b_mounts_;
  std::string ws_, ws_dev_;
};

TEST_F(SendReceive, FullThenIncrementalOfOneMebibyteThenAChainOfThree) {
  start_b();
  make_workspace();
  ok("snapshot.create", {{"volume", "ws"},
                         {"name", "s0"},
                         {"pipeline", "p"},
                         {"run", "r1"},
                         {"labels", {{"team", "ml"}}}});

  // Full: a new snapshot on B with A's identity and metadata.
  auto r = pipe_to_b("s0");
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  json a0 = ok("snapshot.show", {{"name", "s0"}});
  json b0 = b_->ok("snapshot.show", {{"name", "s0"}});
  EXPECT_EQ(b0.value("uuid", "b"), a0.value("uuid", "a"));
  EXPECT_EQ(b0["labels"].value("team", ""), "ml");
  EXPECT_EQ(b0["step"].value("pipeline", ""), "p");
  EXPECT_EQ(b0["step"].value("run", ""), "r1");
  EXPECT_EQ(b0["step"].value("phase", ""), "initial");
  EXPECT_EQ(b0["received_from"].value("pool", ""), pool_);
  EXPECT_EQ(b0["received_from"].value("name", ""), "s0");
  expect_same("s0");

  // Incremental: 1 MiB of the 256 MiB volume changed. The stream holds
  // that MiB, what ext4 wrote around it (its journal, an inode), and the
  // header; never the whole volume.
  change(3, 1);
  ok("snapshot.create", {{"volume", "ws"}, {"name", "s1"}});
  const std::string stream = dir_ + "/s1.stream";
  r = send_to_file("s1 --base s0", stream);
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto bytes = std::filesystem::file_size(stream);
  std::cout << "incremental stream for 1 MiB changed of 256 MiB: " << bytes << " bytes ("
            << static_cast<double>(bytes) / (1 << 20) << " MiB)\n";
  EXPECT_GE(bytes, 1u << 20);
  EXPECT_LT(bytes, 4u << 20) << "far more than the changed MiB was sent";
  r = sh(b_->ctl_cmd() + " snapshot receive -i " + stream);
  ASSERT_EQ(r.rc, 0) << r.err;
  json b1 = b_->ok("snapshot.show", {{"name", "s1"}});
  EXPECT_EQ(b1.value("parent_id", -1), b0.value("id", -2))
      << "an incremental snapshot's parent is its base";
  expect_same("s1");

  // A chain of three incrementals, each on the one before.
  std::string prev = "s1";
  for (int k = 2; k <= 4; ++k) {
    change(k + 2, 1);
    std::string name = "s" + std::to_string(k);
    ok("snapshot.create", {{"volume", "ws"}, {"name", name}});
    r = pipe_to_b(name + " --base " + prev);
    ASSERT_EQ(r.rc, 0) << name << ": " << r.err;
    prev = name;
  }
  expect_same("s4");
}

TEST_F(SendReceive, BrokenStreamsAndAWrongBaseAreRefusedWithNothingHalfMade) {
  start_b();
  make_workspace();
  ok("snapshot.create", {{"volume", "ws"}, {"name", "s0"}});
  change(1, 1);
  ok("snapshot.create", {{"volume", "ws"}, {"name", "s1"}});
  const std::string full = dir_ + "/s0.stream", incr = dir_ + "/s1.stream";
  ASSERT_EQ(send_to_file("s0", full).rc, 0);
  ASSERT_EQ(send_to_file("s1 --base s0", incr).rc, 0);
  const std::uint64_t used = b_used();

  // An incremental whose base B does not have; then one whose base B has by
  // name only (a local snapshot also called s0): identity is the uuid.
  auto r = sh(b_->ctl_cmd() + " snapshot receive -i " + incr);
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("base s0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("receive that snapshot first"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  b_->ok("volume.create", {{"name", "other"}, {"size_bytes", 256 << 20}});
  b_->ok("snapshot.create", {{"volume", "other"}, {"name", "s0"}});
  const std::uint64_t used_with_other = b_used();
  r = sh(b_->ctl_cmd() + " snapshot receive -i " + incr);
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("is not in pool"), std::string::npos) << r.err;
  expect_nothing_half_made("s1", used_with_other);
  b_->ok("snapshot.delete", {{"name", "s0"}});
  b_->ok("volume.delete", {{"name", "other"}});

  // Truncated: half the stream.
  const auto size = std::filesystem::file_size(full);
  r = sh("head -c " + std::to_string(size / 2) + " " + full + " | " + b_->ctl_cmd() +
         " snapshot receive");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
  expect_nothing_half_made("s0", used);

  // One byte changed in the middle of the data.
  const std::string bad = dir_ + "/bad.stream";
  ASSERT_EQ(sh("cp " + full + " " + bad).rc, 0);
  ASSERT_EQ(sh("printf '\\x5a' | dd of=" + bad + " bs=1 seek=" + std::to_string(size / 2) +
               " conv=notrunc status=none")
                .rc,
            0);
  ASSERT_NE(sha256_of(bad), sha256_of(full));
  r = sh(b_->ctl_cmd() + " snapshot receive -i " + bad);
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("checksum"), std::string::npos) << r.err;
  expect_nothing_half_made("s0", used);

  // Every refusal left B able to take the same streams again.
  ASSERT_EQ(sh(b_->ctl_cmd() + " snapshot receive -i " + full).rc, 0);
  r = sh(b_->ctl_cmd() + " snapshot receive -i " + incr);
  ASSERT_EQ(r.rc, 0) << r.err;
  // The same snapshot twice is refused.
  r = sh(b_->ctl_cmd() + " snapshot receive --name again -i " + full);
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("already has that snapshot"), std::string::npos) << r.err;
  expect_same("s1");
}

TEST_F(SendReceive, APoolWithoutRoomIsRefusedBeforeAnythingIsMade) {
  start_b("48M");
  make_workspace();  // 16 MiB of files and ext4's own blocks
  auto r = sh("dd if=/dev/urandom of=" + ws_ + "/big bs=1M count=40 status=none && sync");
  ASSERT_EQ(r.rc, 0) << r.err;
  ok("snapshot.create", {{"volume", "ws"}, {"name", "s0"}});
  const std::uint64_t used = b_used();
  r = pipe_to_b("s0");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("make room"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no_space"), std::string::npos) << r.err;
  expect_nothing_half_made("s0", used);
}

// kill -9 of the receiving agent while a stream is half in, then of the
// sending one while its reader stalls: after a restart each is consistent
// (recovery rolled the half-received snapshot back, released the held
// metadata snapshot) and the same transfer works.
TEST_F(SendReceive, KillNineOfReceiverAndSenderMidStream) {
  start_b();
  make_workspace();
  ok("snapshot.create", {{"volume", "ws"}, {"name", "s0"}});
  const std::string full = dir_ + "/s0.stream";
  ASSERT_EQ(send_to_file("s0", full).rc, 0);
  const std::uint64_t used = b_used();

  // The receiver: half of the stream through a FIFO that stays open.
  const std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto receiving = std::thread([&] {
    sh(b_->ctl_cmd() + " snapshot receive -i " + fifo + " > " + dir_ + "/recv.out 2>&1");
  });
  int w = ::open(fifo.c_str(), O_WRONLY);
  ASSERT_GE(w, 0);
  auto half = std::filesystem::file_size(full) / 2;
  ASSERT_EQ(sh("head -c " + std::to_string(half) + " " + full + " > " + dir_ + "/half").rc, 0);
  std::string data = read_file(dir_ + "/half");
  ASSERT_EQ(::write(w, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  // The agent has the half when it has made its device and written into it.
  bool receiving_device = false;
  for (int i = 0; i < 300 && !receiving_device; ++i) {
    auto names = dm::list_devices();
    for (const auto& n : names ? *names : std::vector<std::string>{})
      if (n.rfind(b_->pool() + "-recv-", 0) == 0) receiving_device = true;
    if (!receiving_device) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(receiving_device) << "node B never started receiving";
  std::this_thread::sleep_for(std::chrono::seconds(1));
  b_->stop(SIGKILL);
  ::close(w);
  receiving.join();
  b_->start();
  expect_nothing_half_made("s0", used);
  auto r = sh(b_->ctl_cmd() + " snapshot receive -i " + full);
  ASSERT_EQ(r.rc, 0) << r.err;

  // The sender: a reader that never reads, so the agent blocks mid-stream
  // holding the pool's metadata snapshot.
  change(2, 1);
  ok("snapshot.create", {{"volume", "ws"}, {"name", "s1"}});
  const std::string fifo2 = dir_ + "/fifo2";
  ASSERT_EQ(::mkfifo(fifo2.c_str(), 0600), 0);
  int rd = ::open(fifo2.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(rd, 0);
  auto sending = std::thread(
      [&] { sh(kCtl + " --socket " + socket_ + " snapshot send s0 > " + fifo2 + " 2>/dev/null"); });
  bool held = false;
  for (int i = 0; i < 300 && !held; ++i) {
    // The held root is the status line's 7th field ("-" when none).
    auto f = sh("dmsetup status " + pool_ + "-pool | awk '{print $7}'");
    held = f.out.find('-') == std::string::npos && !f.out.empty() && f.out != "\n";
    if (!held) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(held) << "node A never held its metadata snapshot";
  stop_daemon(SIGKILL);
  ::close(rd);
  sending.join();
  start_daemon();
  auto f = sh("dmsetup status " + pool_ + "-pool | awk '{print $7}'");
  EXPECT_EQ(f.out, "-\n") << "the restarted agent did not release the held metadata snapshot";
  r = pipe_to_b("s1 --base s0");
  ASSERT_EQ(r.rc, 0) << r.err;
  expect_same("s1");
}

// Two sends at once: the first holds the pool's one metadata snapshot while
// its reader stalls; the second, asked meanwhile, either succeeds too or is
// refused `busy` in one line and leaves no file. Either way, once both are
// over the metadata snapshot is released and every stream that succeeded
// is received whole on node B.
TEST_F(SendReceive, TwoConcurrentSendsAndTheMetadataSnapshotIsReleased) {
  start_b();
  make_workspace();
  ok("snapshot.create", {{"volume", "ws"}, {"name", "s0"}});
  auto held_root = [&] { return sh("dmsetup status " + pool_ + "-pool | awk '{print $7}'").out; };
  ASSERT_EQ(held_root(), "-\n");

  // The first send writes into a FIFO nobody reads yet: it blocks mid-stream.
  const std::string fifo = dir_ + "/fifo", first = dir_ + "/first.stream";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  int rd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(rd, 0);
  Output first_send;
  auto sending = std::thread(
      [&] { first_send = sh(kCtl + " --socket " + socket_ + " snapshot send s0 > " + fifo); });
  bool held = false;
  for (int i = 0; i < 300 && !held; ++i) {
    auto f = held_root();
    held = !f.empty() && f != "-\n" && f != "\n";
    if (!held) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(held) << "the first send never held the metadata snapshot";

  // The second, while the first holds it. Bounded: if it waited for the
  // first, the first's reader must start before it can end.
  const std::string second = dir_ + "/second.stream";
  Output second_send;
  auto sending2 = std::thread([&] { second_send = send_to_file("s0", second); });
  std::this_thread::sleep_for(std::chrono::seconds(5));
  // Now read the first stream to its end.
  int flags = ::fcntl(rd, F_GETFL);
  ASSERT_EQ(::fcntl(rd, F_SETFL, flags & ~O_NONBLOCK), 0);
  {
    int out = ::open(first.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(out, 0);
    char buf[1 << 16];
    for (;;) {
      ssize_t n = ::read(rd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      ASSERT_EQ(::write(out, buf, static_cast<std::size_t>(n)), n);
    }
    ::close(out);
  }
  ::close(rd);
  sending.join();
  sending2.join();
  ASSERT_EQ(first_send.rc, 0) << first_send.err;
  if (second_send.rc != 0) {
    EXPECT_NE(second_send.err.find("busy"), std::string::npos) << second_send.err;
    EXPECT_EQ(std::count(second_send.err.begin(), second_send.err.end(), '\n'), 1)
        << second_send.err;
    EXPECT_FALSE(std::filesystem::exists(second)) << "a refused send left its file";
  }
  std::cout << "second send: "
            << (second_send.rc == 0 ? "succeeded" : "refused: " + second_send.err) << std::endl;
  EXPECT_EQ(held_root(), "-\n") << "the metadata snapshot is still held after both sends";

  // Every stream that succeeded is whole: B receives it and holds the same data.
  auto r = sh(b_->ctl_cmd() + " snapshot receive -i " + first);
  ASSERT_EQ(r.rc, 0) << r.err;
  expect_same("s0");
  // A second whole stream of the same snapshot is as long as the first (B
  // already holds that snapshot's uuid, so it would refuse to receive it).
  if (second_send.rc == 0) {
    EXPECT_EQ(std::filesystem::file_size(second), std::filesystem::file_size(first));
  }
  // And a send after both works.
  r = send_to_file("s0", dir_ + "/third.stream");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(held_root(), "-\n");
}

}  // namespace
}  // namespace stepsnap::agent::vmtest
