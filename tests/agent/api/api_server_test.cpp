#include "agent/api/api_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
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
  tl::expected<json, ApiError> handle(const Request& r, const PeerCred& peer) override {
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

}  // namespace
}  // namespace stepsnap::agent
