#include "agent/api/api_server.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>

#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;
using namespace protocol;
using namespace std::chrono_literals;

// Answers volume.list with the peer's uid; fails volume.delete with
// not_found; throws on snapshot.show (a handler bug); streams three events
// on subscribe, then (follow) waits until the server stops.
class FakeHandler : public Handler {
 public:
  tl::expected<Answer, ApiError> handle(const Request& r, const PeerCred& peer) override {
    if (r.op == Op::volume_delete) {
      return tl::unexpected(ApiError{"not_found", "volume " +
                                                      std::get<VolumeDeleteArgs>(r.args).name +
                                                      ": not found; list them with volume.list"});
    }
    if (r.op == Op::snapshot_show) throw std::runtime_error("boom");
    return json{{"op", std::string(to_string(r.op))}, {"uid", peer.uid}};
  }
  tl::expected<void, ApiError> subscribe(const Request&, const EventsSubscribeArgs& a,
                                         const PeerCred&, EventStream& s) override {
    if (a.since && *a.since < 100) {
      return tl::unexpected(
          ApiError{"events.truncated", "events up to 99 were pruned", json{{"oldest_seq", 100}}});
    }
    if (!s.accept({{"last_seq", 3}})) return {};
    for (int i = 1; i <= 3; ++i)
      if (!s.send({{"seq", i}})) return {};
    while (a.follow && !s.stopping()) std::this_thread::sleep_for(5ms);
    return {};
  }
};

class Client {
 public:
  explicit Client(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Client() { ::close(fd_); }
  bool connected() const { return connected_; }
  void send_raw(const std::string& bytes) {
    ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  // The next line as JSON; null at EOF.
  json line() {
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        auto j = json::parse(buf_.substr(0, nl));
        buf_.erase(0, nl + 1);
        return j;
      }
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return nullptr;
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  json call(const std::string& request) {
    send_raw(request + "\n");
    return line();
  }
  // call() for a connection the server may refuse: it then sends its one
  // error line and closes, possibly before our request is written.
  json ask(const std::string& request) {
    std::string bytes = request + "\n";
    (void)!::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    return line();
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("api.sock");
    auto s = ApiServer::start({.socket_path = path_}, handler_);
    ASSERT_TRUE(s) << s.error().message();
    server_ = std::move(*s);
  }
  testing::TempDir dir_;
  std::string path_;
  FakeHandler handler_;
  std::unique_ptr<ApiServer> server_;
};

TEST_F(ApiServerTest, SocketIsMode0660) {
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
}

TEST_F(ApiServerTest, ServesRequestsInOrderOnOneConnection) {
  Client c(path_);
  ASSERT_TRUE(c.connected());
  auto r1 = c.call(R"({"v":1,"id":1,"op":"volume.list"})");
  EXPECT_EQ(r1["ok"], true);
  EXPECT_EQ(r1["id"], 1);
  EXPECT_EQ(r1["result"]["op"], "volume.list");
  EXPECT_EQ(r1["result"]["uid"], ::geteuid());
  auto r2 = c.call(R"({"v":1,"id":"two","op":"volume.delete","args":{"name":"ws"}})");
  EXPECT_EQ(r2["ok"], false);
  EXPECT_EQ(r2["id"], "two");
  EXPECT_EQ(r2["error"]["code"], "not_found");
}

TEST_F(ApiServerTest, BadInputGetsAnErrorAndTheConnectionStaysUsable) {
  Client c(path_);
  EXPECT_EQ(c.call("this is not json")["error"]["code"], "bad_json");
  EXPECT_EQ(c.call(R"({"v":1,"id":1,"op":"nope"})")["error"]["code"], "unknown_op");
  EXPECT_EQ(c.call(R"({"v":1,"id":1,"op":"volume.list","x":1})")["error"]["code"], "unknown_field");
  // A handler that throws costs one request, not the daemon.
  auto crash = c.call(R"({"v":1,"id":9,"op":"snapshot.show","args":{"name":"s"}})");
  EXPECT_EQ(crash["error"]["code"], "internal");
  EXPECT_EQ(c.call(R"({"v":1,"id":2,"op":"volume.list"})")["ok"], true);
}

TEST_F(ApiServerTest, OversizedLineIsRefusedAndClosed) {
  Client c(path_);
  c.send_raw(std::string(kMaxRequestBytes + 10, 'x'));
  auto r = c.line();
  EXPECT_EQ(r["error"]["code"], "too_large");
  EXPECT_TRUE(c.line().is_null());  // closed
}

TEST_F(ApiServerTest, SubscribeStreamsEventsThenServesTheNextRequest) {
  Client c(path_);
  c.send_raw(R"({"v":1,"id":5,"op":"events.subscribe","args":{"since":100,"follow":false}})"
             "\n");
  auto ack = c.line();
  EXPECT_EQ(ack["ok"], true);
  EXPECT_EQ(ack["result"]["last_seq"], 3);
  for (int i = 1; i <= 3; ++i) {
    auto e = c.line();
    EXPECT_EQ(e["id"], 5);
    EXPECT_EQ(e["event"]["seq"], i);
  }
  EXPECT_EQ(c.call(R"({"v":1,"id":6,"op":"volume.list"})")["id"], 6);
}

TEST_F(ApiServerTest, TruncatedSubscribeIsAnExplicitError) {
  Client c(path_);
  auto r = c.call(R"({"v":1,"id":5,"op":"events.subscribe","args":{"since":3}})");
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"]["code"], "events.truncated");
  EXPECT_EQ(r["error"]["details"]["oldest_seq"], 100);
}

TEST_F(ApiServerTest, FollowersDoNotBlockOtherClientsAndStopEndsThem) {
  Client follower(path_);
  follower.send_raw(R"({"v":1,"id":1,"op":"events.subscribe","args":{"since":100}})"
                    "\n");
  EXPECT_EQ(follower.line()["ok"], true);
  Client other(path_);
  EXPECT_EQ(other.call(R"({"v":1,"id":2,"op":"volume.list"})")["ok"], true);
  auto start = std::chrono::steady_clock::now();
  server_->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  for (int i = 0; i < 3; ++i) follower.line();  // the three events
  EXPECT_TRUE(follower.line().is_null());
  EXPECT_NE(::access(path_.c_str(), F_OK), 0);  // socket file removed
}

TEST_F(ApiServerTest, SecondServerOnALivePathIsRefused) {
  FakeHandler other;
  auto s = ApiServer::start({.socket_path = path_}, other);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().err, EADDRINUSE);
}

TEST(ApiServerStart, StaleSocketFileIsReplaced) {
  testing::TempDir dir;
  std::string path = dir.file("api.sock");
  FakeHandler h;
  {
    auto s = ApiServer::start({.socket_path = path}, h);
    ASSERT_TRUE(s);
    (*s)->stop();
  }
  // Simulate a crash: leave a dead socket file behind.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
  auto s = ApiServer::start({.socket_path = path}, h);
  ASSERT_TRUE(s) << s.error().message();
}

TEST(ApiServerStart, RegularFileAtThePathIsNotClobbered) {
  testing::TempDir dir;
  std::string path = dir.file("api.sock");
  std::ofstream(path) << "keep me";
  FakeHandler h;
  auto s = ApiServer::start({.socket_path = path}, h);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("not a socket"), std::string::npos);
}

TEST(ApiServerStart, TooLongPathIsNamed) {
  FakeHandler h;
  auto s = ApiServer::start({.socket_path = "/tmp/" + std::string(200, 'x')}, h);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().err, ENAMETOOLONG);
}

TEST(PeerAllowed, RootSelfAndGroupMembersOnly) {
  const uid_t self = 1000;
  EXPECT_TRUE(peer_allowed({1, 0, 0, {}}, self, std::nullopt));
  EXPECT_TRUE(peer_allowed({1, 1000, 1000, {}}, self, std::nullopt));
  EXPECT_FALSE(peer_allowed({1, 2000, 2000, {}}, self, std::nullopt));
  EXPECT_FALSE(peer_allowed({1, 2000, 2000, {5, 6}}, self, 7));
  EXPECT_TRUE(peer_allowed({1, 2000, 7, {}}, self, 7));         // primary group
  EXPECT_TRUE(peer_allowed({1, 2000, 2000, {5, 7}}, self, 7));  // supplementary
}

// ---- Peers that are not root: real uids and groups, through fork and
// setgroups/setgid/setuid in the child, connecting to the real socket.

constexpr gid_t kSocketGroup = 47110;
constexpr uid_t kMember = 47111;    // in kSocketGroup
constexpr uid_t kMember2 = 47113;   // in kSocketGroup
constexpr uid_t kStranger = 47112;  // in no group of ours

// A child process running as `uid` with supplementary `groups`: fn's string
// comes back over a pipe; the child then stays (its sockets open) until
// release().
class AsUser {
 public:
  AsUser(uid_t uid, std::vector<gid_t> groups, const std::function<std::string()>& fn) {
    int out[2], hold[2];
    if (::pipe(out) != 0 || ::pipe(hold) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(out[0]);
      ::close(hold[1]);
      if (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(uid) != 0 ||
          ::setuid(uid) != 0)
        ::_exit(121);
      std::string r = fn() + "\n";
      if (::write(out[1], r.data(), r.size()) < 0) ::_exit(122);
      char c;
      (void)!::read(hold[0], &c, 1);  // until the parent releases us
      ::_exit(0);
    }
    ::close(out[1]);
    ::close(hold[0]);
    out_ = out[0];
    hold_ = hold[1];
  }
  ~AsUser() { release(); }
  std::string result() {
    std::string r;
    char c;
    while (::read(out_, &c, 1) == 1 && c != '\n') r += c;
    return r;
  }
  int release() {
    if (pid_ <= 0) return -1;
    ::close(hold_);
    ::close(out_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int hold_ = -1;
};

// The answer's error code, or "ok", or "eof".
std::string outcome(const json& answer) {
  if (answer.is_null()) return "eof";
  if (answer.value("ok", false)) return "ok";
  return answer["error"].value("code", "?");
}

class PeerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to take other uids";
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);  // other uids reach the socket
    path_ = dir_.file("api.sock");
  }
  void start(ApiServerOptions o) {
    o.socket_path = path_;
    o.group = kSocketGroup;
    auto s = ApiServer::start(std::move(o), handler_);
    ASSERT_TRUE(s) << s.error().message();
    server_ = std::move(*s);
  }
  testing::TempDir dir_;
  std::string path_;
  FakeHandler handler_;
  std::unique_ptr<ApiServer> server_;
};

TEST_F(PeerTest, AGroupMemberReadsButRootOnlyOpsAreForbiddenBeforeTheHandler) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  AsUser member(kMember, {kSocketGroup}, [&] {
    Client c(path_);
    if (!c.connected()) return std::string("connect failed");
    json list = c.ask(R"({"v":1,"id":1,"op":"volume.list"})");
    json reg = c.call(R"({"v":1,"id":2,"op":"step.register","args":{"pipeline":"p","run":"r",)"
                      R"("step":"s","cgroup":"/sys/fs/cgroup/system.slice","volumes":["ws"]}})");
    json clone = c.call(R"({"v":1,"id":3,"op":"run.clone","args":{"pipeline":"p","run":"r",)"
                        R"("volume":"ws"}})");
    return json{{"list", list}, {"register", reg}, {"clone", clone}}.dump();
  });
  json r = json::parse(member.result());
  EXPECT_EQ(outcome(r["list"]), "ok");
  EXPECT_EQ(r["list"]["result"]["uid"], kMember) << "the handler saw the peer's real uid";
  EXPECT_EQ(outcome(r["register"]), "forbidden") << r.dump();
  EXPECT_EQ(r["register"]["error"]["message"],
            "step.register: only root may do this, not uid 47111; run it as root (for steps: "
            "through runner exec)");
  EXPECT_EQ(r["register"]["id"], 2);
  EXPECT_EQ(outcome(r["clone"]), "forbidden") << r.dump();
  EXPECT_EQ(member.release(), 0);
  // Root may.
  Client root(path_);
  EXPECT_EQ(outcome(root.call(R"({"v":1,"id":1,"op":"run.clone","args":{"pipeline":"p",)"
                              R"("run":"r","volume":"ws"}})")),
            "ok");
}

TEST_F(PeerTest, AnUnrelatedUserIsKeptOutByTheFileModeAndByTheServer) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  auto attempt = [&] {
    return AsUser(kStranger, {},
                  [&] {
                    Client c(path_);
                    if (!c.connected()) return std::string("connect: ") + std::strerror(errno);
                    json first = c.line();
                    json after = c.line();
                    return json{{"first", first}, {"after", outcome(after)}}.dump();
                  })
        .result();
  };
  // 0660 root:group: the kernel refuses the connect.
  EXPECT_EQ(attempt(), std::string("connect: ") + std::strerror(EACCES));
  // Even with the file opened up, the server's own check refuses and closes.
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  json r = json::parse(attempt());
  EXPECT_EQ(outcome(r["first"]), "forbidden") << r.dump();
  EXPECT_NE(r["first"]["error"]["message"].get<std::string>().find("uid 47112 may not use"),
            std::string::npos);
  EXPECT_EQ(r["after"], "eof");
}

TEST_F(PeerTest, SixtyFourIdleClientsOfOneUserDoNotLockRootOut) {
  ASSERT_NO_FATAL_FAILURE(start({}));  // the daemon's defaults: 64, 16 per uid, 8 for root
  AsUser flood(kMember, {kSocketGroup}, [&] {
    int ok = 0, busy = 0;
    for (int i = 0; i < 64; ++i) {
      auto* c = new Client(path_);  // kept open until the child exits
      std::string o = outcome(c->ask(R"({"v":1,"id":1,"op":"volume.list"})"));
      ok += o == "ok";
      busy += o == "busy";
    }
    return std::to_string(ok) + " " + std::to_string(busy);
  });
  EXPECT_EQ(flood.result(), "16 48");
  // With those 16 still open, another user and root are served.
  AsUser other(kMember2, {kSocketGroup}, [&] {
    auto* c = new Client(path_);
    return outcome(c->ask(R"({"v":1,"id":1,"op":"volume.list"})"));
  });
  EXPECT_EQ(other.result(), "ok");
  Client root(path_);
  EXPECT_EQ(outcome(root.ask(R"({"v":1,"id":1,"op":"volume.list"})")), "ok");
}

TEST_F(PeerTest, TheLastSlotsAreKeptForRoot) {
  ASSERT_NO_FATAL_FAILURE(
      start({.max_connections = 8, .max_connections_per_uid = 4, .root_reserve = 2}));
  auto open_n = [&](int n) {
    return [this, n] {
      std::string r;
      for (int i = 0; i < n; ++i) {
        auto* c = new Client(path_);
        r += (r.empty() ? "" : " ") + outcome(c->ask(R"({"v":1,"id":1,"op":"volume.list"})"));
      }
      return r;
    };
  };
  AsUser a(kMember, {kSocketGroup}, open_n(5));
  EXPECT_EQ(a.result(), "ok ok ok ok busy");  // 4 per uid
  AsUser b(kMember2, {kSocketGroup}, open_n(3));
  EXPECT_EQ(b.result(), "ok ok busy");  // 6 of 8 for non-root peers
  Client root1(path_), root2(path_), root3(path_);
  EXPECT_EQ(outcome(root1.ask(R"({"v":1,"id":1,"op":"volume.list"})")), "ok");
  EXPECT_EQ(outcome(root2.ask(R"({"v":1,"id":1,"op":"volume.list"})")), "ok");
  EXPECT_EQ(outcome(root3.ask(R"({"v":1,"id":1,"op":"volume.list"})")), "busy");
}

TEST_F(PeerTest, AMemberThatNeverSendsAWholeRequestIsClosedRootsIdleConnectionIsNot) {
  ASSERT_NO_FATAL_FAILURE(start({.request_timeout = 200ms}));
  Client root(path_);  // idle from here on
  AsUser idle(kMember, {kSocketGroup}, [&] {
    Client silent(path_), partial(path_);
    partial.send_raw(R"({"v":1,"id":1,)");
    json a = silent.line();
    json b = partial.line();
    return json{{"silent", a},
                {"silent_after", outcome(silent.line())},
                {"partial", b},
                {"partial_after", outcome(partial.line())}}
        .dump();
  });
  json r = json::parse(idle.result());
  EXPECT_EQ(outcome(r["silent"]), "timeout") << r.dump();
  EXPECT_EQ(r["silent_after"], "eof");
  EXPECT_EQ(outcome(r["partial"]), "timeout") << r.dump();
  EXPECT_EQ(r["partial_after"], "eof");
  // Root's connection idled at least as long and still serves (runner keeps
  // one open for a whole step).
  EXPECT_EQ(outcome(root.ask(R"({"v":1,"id":1,"op":"volume.list"})")), "ok");
  // A partial request from root is held to the same limit.
  root.send_raw(R"({"v":1,)");
  EXPECT_EQ(outcome(root.line()), "timeout");
}

}  // namespace
}  // namespace stepsnap::agent
