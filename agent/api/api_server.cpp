#include "agent/api/api_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "agent/api/authz.h"
#include "common/log.h"

namespace stepsnap::agent {

using namespace protocol;  // the server half of the wire protocol

namespace {

using json = nlohmann::json;

Result<sockaddr_un> socket_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return fail("listen", path, ENAMETOOLONG,
                "a socket path must be 1 to " + std::to_string(sizeof(addr.sun_path) - 1) +
                    " bytes; choose a shorter --socket");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// A socket file left by a crashed daemon is removed; one that answers is
// another running daemon, and we must not steal its path.
Status clear_stale_socket(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno("stat", path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return fail("listen", path, EEXIST,
                "the path exists and is not a socket; remove it or pick another --socket");
  }
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (probe && ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    return fail("listen", path, EADDRINUSE, "another stepsnapd is serving it; stop that one first");
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return fail_errno("remove stale socket", path);
  return {};
}

Result<PeerCred> peer_of(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return fail_errno("read peer credentials", "socket");
  }
  PeerCred peer{cred.pid, cred.uid, cred.gid, {}};
  // SO_PEERGROUPS (Linux 4.13): the groups the peer had when it connected,
  // which is what matters, not what /etc/group says now.
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 4; ++attempt) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      peer.groups = std::move(groups);
      return peer;
    }
    if (errno != ERANGE) break;
    groups.resize(glen / sizeof(gid_t) + 1);
  }
  return peer;  // primary group only
}

// Whole lines or nothing; MSG_NOSIGNAL: a client that left must not kill the
// daemon with SIGPIPE. `out` ends with its newline.
bool send_all(int fd, const std::string& out) {
  std::size_t off = 0;
  while (off < out.size()) {
    ssize_t n = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

bool send_line(int fd, const std::string& line) { return send_all(fd, line + "\n"); }

class SocketStream : public EventStream {
 public:
  SocketStream(int fd, json id, const std::atomic<bool>& stopping)
      : fd_(fd), id_(std::move(id)), stopping_(stopping) {}
  bool accept(const json& result) override {
    if (accepted_) return ok_;
    accepted_ = true;
    ok_ = ok_ && send_line(fd_, ok_response(id_, result));
    return ok_ && !stopping();
  }
  bool send_events(const std::vector<std::string_view>& events) override {
    if (!accepted_ && !accept(json::object())) return false;
    // One write for the page: a syscall per event was a good part of a
    // page's time under emulation.
    std::string out;
    for (std::string_view e : events) {
      out += event_line_response(id_, e);
      out += '\n';
    }
    ok_ = ok_ && send_all(fd_, out);
    return ok_ && !stopping();
  }
  bool stopping() const override { return stopping_.load(); }
  bool accepted() const { return accepted_; }
  bool ok() const { return ok_; }

 private:
  int fd_;
  json id_;
  const std::atomic<bool>& stopping_;
  bool accepted_ = false;
  bool ok_ = true;
};

}  // namespace

bool EventStream::send(const json& event) {
  const std::string text = event.dump(-1, ' ', false, json::error_handler_t::replace);
  return send_events({text});
}

bool peer_allowed(const PeerCred& peer, uid_t server_uid, std::optional<gid_t> allowed_group) {
  if (peer.uid == 0 || peer.uid == server_uid) return true;
  if (!allowed_group) return false;
  if (peer.gid == *allowed_group) return true;
  return std::find(peer.groups.begin(), peer.groups.end(), *allowed_group) != peer.groups.end();
}

Result<std::unique_ptr<ApiServer>> ApiServer::start(ApiServerOptions options, Handler& handler) {
  const std::string& path = options.socket_path;
  auto addr = socket_address(path);
  if (!addr) return tl::unexpected(addr.error());
  if (auto r = clear_stale_socket(path, *addr); !r) return tl::unexpected(r.error());

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("create socket", path);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
    return fail_errno("bind", path);
  }
  // Mode and owner are set between bind() and listen(): nobody can connect
  // before listen(), so there is no window with looser permissions.
  if (::chmod(path.c_str(), options.mode) != 0) {
    auto e = fail_errno("chmod", path);
    ::unlink(path.c_str());
    return e;
  }
  if (options.group && ::chown(path.c_str(), 0, *options.group) != 0) {
    auto e = fail_errno("chown root:" + std::to_string(*options.group), path);
    e.value().detail = "the daemon must run as root to hand the socket to --socket-group";
    ::unlink(path.c_str());
    return e;
  }
  if (::listen(fd.get(), 64) != 0) {
    auto e = fail_errno("listen", path);
    ::unlink(path.c_str());
    return e;
  }
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop) return fail_errno("create eventfd", "api server");

  std::unique_ptr<ApiServer> server(
      new ApiServer(std::move(options), handler, std::move(fd), std::move(stop)));
  server->acceptor_ = std::thread([s = server.get()] { s->accept_loop(); });
  return server;
}

ApiServer::~ApiServer() { stop(); }

void ApiServer::stop() {
  if (stopping_.exchange(true)) {
    if (acceptor_.joinable()) acceptor_.join();
    return;
  }
  std::uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::lock_guard lock(mutex_);
    // shutdown() wakes a thread blocked in recv() or send() on that socket.
    for (auto& c : connections_) ::shutdown(c.fd.get(), SHUT_RDWR);
  }
  reap(true);
  ::unlink(options_.socket_path.c_str());
}

std::size_t ApiServer::connections() const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& c : connections_) n += c.done ? 0 : 1;
  return n;
}

void ApiServer::reap(bool all) {
  std::list<Connection> finished;
  {
    std::lock_guard lock(mutex_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      auto next = std::next(it);
      if (all || it->done) finished.splice(finished.end(), connections_, it);
      it = next;
    }
  }
  for (auto& c : finished)
    if (c.thread.joinable()) c.thread.join();
}

std::optional<std::string> ApiServer::over_limit(const PeerCred& peer) const {
  std::size_t total = 0, mine = 0;
  for (const auto& c : connections_) {
    if (c.done) continue;
    ++total;
    mine += c.uid == peer.uid ? 1 : 0;
  }
  const std::size_t max = options_.max_connections;
  if (is_admin(peer, self_)) {
    if (total < max) return std::nullopt;
    return "too many connections (" + std::to_string(max) + "); close idle clients and retry";
  }
  const std::size_t shared = max > options_.root_reserve ? max - options_.root_reserve : 0;
  if (total >= shared) {
    return "too many connections (" + std::to_string(shared) + " for non-root peers, " +
           std::to_string(options_.root_reserve) +
           " more kept for root); close idle clients and retry";
  }
  if (mine >= options_.max_connections_per_uid) {
    return "uid " + std::to_string(peer.uid) + " has " + std::to_string(mine) +
           " connections open, the most one user may; close idle ones and retry";
  }
  return std::nullopt;
}

void ApiServer::accept_loop() {
  const uid_t self = self_;
  while (!stopping_) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, 1000);
    reap(false);
    if (n < 0 && errno != EINTR) {
      log::error(std::string("api server poll: ") + std::strerror(errno));
      return;
    }
    if (n <= 0 || fds[1].revents) continue;
    UniqueFd client(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client) continue;
    auto peer = peer_of(client.get());
    if (!peer) {
      send_line(client.get(), error_response(nullptr, "forbidden", peer.error().message()));
      continue;
    }
    if (!peer_allowed(*peer, self, options_.group)) {
      log::warn("api: refused uid " + std::to_string(peer->uid) + " pid " +
                std::to_string(peer->pid));
      send_line(client.get(),
                error_response(nullptr, "forbidden",
                               "uid " + std::to_string(peer->uid) +
                                   " may not use this socket; run as root or join the group "
                                   "given by stepsnapd --socket-group"));
      continue;
    }
    std::lock_guard lock(mutex_);
    if (auto why = over_limit(*peer)) {
      log::warn("api: refused a connection of uid " + std::to_string(peer->uid) + ": " + *why);
      send_line(client.get(), error_response(nullptr, "busy", *why));
      continue;
    }
    peer->connection = ++connection_count_;
    auto& c = connections_.emplace_back();
    c.uid = peer->uid;
    c.fd = std::move(client);
    c.thread = std::thread([this, &c, p = std::move(*peer)] { serve(c, p); });
  }
}

namespace {

// recv that also takes the file descriptors a client passed (SCM_RIGHTS:
// snapshot.send and snapshot.receive). They arrive close-on-exec and are
// owned from here on.
ssize_t recv_with_fds(int fd, char* buf, std::size_t len, std::vector<UniqueFd>& fds) {
  iovec iov{buf, len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int passed;
      std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
      fds.emplace_back(passed);
    }
  }
  return n;
}

}  // namespace

bool ApiServer::read_line(int fd, bool admin, std::string& buffer, std::string& line,
                          std::vector<UniqueFd>& fds) {
  using Clock = std::chrono::steady_clock;
  const auto limit = options_.request_timeout;
  // Root's connections may idle between requests (runner waits a whole
  // step); a request that has begun must be finished in time by everyone.
  std::optional<Clock::time_point> deadline;
  if (!admin || !buffer.empty()) deadline = Clock::now() + limit;
  char chunk[8192];
  std::size_t nl;
  while ((nl = buffer.find('\n')) == std::string::npos) {
    // One byte of slack past the limit is enough to know a line is too
    // long; we cannot find where the next request starts, so we close.
    if (buffer.size() > kMaxRequestBytes) {
      send_line(fd, error_response(nullptr, code::too_large,
                                   "request line is over " + std::to_string(kMaxRequestBytes) +
                                       " bytes; closing the connection"));
      return false;
    }
    int wait_ms = -1;
    if (deadline) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
      if (left <= 0) {
        auto seconds = std::chrono::duration<double>(limit).count();
        send_line(fd, error_response(nullptr, code::timeout,
                                     "no complete request line within " +
                                         std::to_string(seconds).substr(0, 5) +
                                         " s; closing the connection (send whole lines, and "
                                         "reconnect when idle)"));
        return false;
      }
      wait_ms = static_cast<int>(left);
    }
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, wait_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return false;
    if (ready == 0) continue;  // the deadline check above answers
    ssize_t n = recv_with_fds(fd, chunk, sizeof chunk, fds);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return false;
    if (!deadline) deadline = Clock::now() + limit;
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
  line = buffer.substr(0, nl);
  buffer.erase(0, nl + 1);
  return true;
}

void ApiServer::serve(Connection& c, PeerCred peer) {
  const int fd = c.fd.get();
  const bool admin = is_admin(peer, self_);
  std::string buffer;
  std::string line;
  bool open = true;
  // Descriptors passed with the request being read; the first one is the
  // request's (PeerCred::passed_fd), any other is closed with it.
  std::vector<UniqueFd> passed;
  while (open && !stopping_) {
    passed.clear();
    peer.passed_fd = -1;
    if (!read_line(fd, admin, buffer, line, passed)) break;
    if (!passed.empty()) peer.passed_fd = passed.front().get();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;

    auto request = parse_request(line);
    if (!request) {
      count("unknown", "invalid_request");
      open = send_line(fd, error_response(request.error()));
      continue;
    }
    // The op table first (authz.h): an op only root may use never reaches
    // the handler for anyone else. Owners are checked by the handler, which
    // knows the objects.
    if (auto refused = check_op(request->op, peer, self_)) {
      log::warn("api: uid " + std::to_string(peer.uid) + ": " + refused->message);
      count(to_string(request->op), refused->code);
      open = send_line(fd, error_response(request->id, refused->code, refused->message));
      continue;
    }
    if (request->op == Op::events_subscribe) {
      SocketStream stream(fd, request->id, stopping_);
      tl::expected<void, ApiError> r;
      try {
        r = handler_.subscribe(*request, std::get<EventsSubscribeArgs>(request->args), peer,
                               stream);
      } catch (const std::exception& e) {
        r = tl::unexpected(ApiError{"internal", std::string("subscribe failed: ") + e.what()});
      }
      count(to_string(request->op), r ? "ok" : r.error().code);
      if (!r) {
        open = send_line(
            fd, error_response(request->id, r.error().code, r.error().message, r.error().details));
      } else if (!stream.accepted()) {
        open = stream.accept(json::object());
      }
      open = open && stream.ok();
      continue;
    }
    // A handler bug must cost one request, never the daemon.
    tl::expected<Answer, ApiError> result;
    try {
      result = handler_.handle(*request, peer);
    } catch (const std::exception& e) {
      log::error(std::string("api: ") + std::string(to_string(request->op)) +
                 " threw: " + e.what());
      result = tl::unexpected(
          ApiError{"internal", std::string(to_string(request->op)) + " failed: " + e.what()});
    }
    count(to_string(request->op), result ? "ok" : result.error().code);
    open = send_line(
        fd, result ? (result->json_text ? ok_text_response(request->id, *result->json_text)
                                        : ok_response(request->id, result->value))
                   : error_response(request->id, result.error().code, result.error().message,
                                    result.error().details));
  }
  ::shutdown(fd, SHUT_RDWR);
  // Not at stop: what was leased to a connection must outlive the daemon
  // (the next one adopts it), not end with it.
  if (!stopping_) handler_.connection_closed(peer);
  c.done = true;
}

void ApiServer::count(std::string_view op, std::string_view result) {
  std::lock_guard lock(counts_mutex_);
  ++counts_[{std::string(op), std::string(result)}];
}

std::map<std::pair<std::string, std::string>, std::uint64_t> ApiServer::request_counts() const {
  std::lock_guard lock(counts_mutex_);
  return counts_;
}

}  // namespace stepsnap::agent
