// The local API: a Unix stream socket speaking newline-delimited JSON
// (request.h). The server owns the socket, the peer check and the framing;
// what each op does is the Handler's business (the daemon implements it over
// the catalog, the pool and the tracer; tests use a fake).
//
// One thread per connection: events.subscribe blocks for as long as the client
// follows, and other clients must keep being served meanwhile.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tl/expected.hpp>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "protocol/request.h"

namespace stepsnap::agent {

// The server half of protocol/: requests arrive as its types.
using protocol::EventsSubscribeArgs;
using protocol::Request;

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups at connect time
  // Which connection, unique for the server's life (from 1): what a step
  // registration is leased to.
  std::uint64_t connection = 0;
  // The file descriptor passed with this request (SCM_RIGHTS), or -1. Owned
  // by the server for the request's duration: snapshot.send writes the
  // stream to it, snapshot.receive reads the stream from it.
  int passed_fd = -1;
};

// Allowed: root, the server's own uid (so an unprivileged test instance can
// talk to itself), or a member of allowed_group (primary or supplementary).
bool peer_allowed(const PeerCred& peer, uid_t server_uid, std::optional<gid_t> allowed_group);

struct ApiError {
  std::string code;     // see request.h code:: and docs/api.md
  std::string message;  // one line: what was wrong and what to do
  nlohmann::json details = nullptr;
};

// An op's result: a JSON value, or its JSON text already written (a page of
// a list, written straight from the catalog's rows: agent/volumes
// device_text.h), which the response takes as it is.
struct Answer {
  Answer() = default;
  Answer(nlohmann::json v) : value(std::move(v)) {}  // NOLINT: a value is an answer
  static Answer text(std::string json_text) {
    Answer a(nullptr);
    a.json_text = std::move(json_text);
    return a;
  }
  nlohmann::json value;
  std::optional<std::string> json_text;
};

// Where a subscription writes. Both calls return false once the client is
// gone or the server is stopping: the handler must then return.
class EventStream {
 public:
  virtual ~EventStream() = default;
  // Sends the subscription's ok response (once; send() does it implicitly).
  virtual bool accept(const nlohmann::json& result) = 0;
  // Sends a page of events in order, each given as its JSON text (one
  // object: the line the event log stores), spliced into the response lines
  // as it stands and written at once: neither parsed nor written again.
  virtual bool send_events(const std::vector<std::string_view>& events) = 0;
  // One event as a JSON value: send_events of its text.
  bool send(const nlohmann::json& event);
  virtual bool stopping() const = 0;
};

class Handler {
 public:
  virtual ~Handler() = default;
  // Every op except events.subscribe. Called concurrently from connection
  // threads.
  virtual tl::expected<Answer, ApiError> handle(const Request& request, const PeerCred& peer) = 0;
  // events.subscribe: stream events until done (follow=false), the client
  // leaves, or stream.stopping(). An error returned before anything was sent
  // (events.truncated, say) becomes the error response.
  virtual tl::expected<void, ApiError> subscribe(const Request& request,
                                                 const EventsSubscribeArgs& args,
                                                 const PeerCred& peer, EventStream& stream) = 0;
  // The connection of peer closed (the client left, or broke a rule), not
  // because the server stops.
  virtual void connection_closed(const PeerCred& peer) { (void)peer; }
};

struct ApiServerOptions {
  std::string socket_path;
  // Group allowed besides root; also the socket file's group. nullopt: root
  // (and the server's own uid) only, and the file keeps our group.
  std::optional<gid_t> group;
  mode_t mode = 0660;
  // Connection limits (docs/security.md): all peers together, each non-root
  // uid, and the slots only root may take, so that one user's idle clients
  // can never lock root's runner out.
  std::size_t max_connections = 64;
  std::size_t max_connections_per_uid = 16;
  std::size_t root_reserve = 8;
  // A request line must be complete this long after its first byte. A
  // non-root connection must also send each request this long after
  // connecting or after the previous answer; root's are exempt from that
  // idle rule, since runner keeps one connection open for a whole step.
  std::chrono::milliseconds request_timeout{std::chrono::seconds(60)};
};

class ApiServer {
 public:
  // Binds (replacing a stale socket file, refusing a live one), sets mode and
  // owner, listens, and starts serving on a background thread.
  static Result<std::unique_ptr<ApiServer>> start(ApiServerOptions options, Handler& handler);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Stops accepting, ends every connection (subscribers included), joins all
  // threads, removes the socket file. Idempotent.
  void stop();
  std::size_t connections() const;
  // Requests answered so far, by (op, result): "ok" or the error code
  // ("not_found", "forbidden", ...; "invalid_request" when the line did not
  // parse, op "unknown"). For /metrics.
  std::map<std::pair<std::string, std::string>, std::uint64_t> request_counts() const;

 private:
  struct Connection {
    uid_t uid = 0;
    UniqueFd fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  ApiServer(ApiServerOptions options, Handler& handler, UniqueFd listen_fd, UniqueFd stop_fd)
      : options_(std::move(options)),
        handler_(handler),
        listen_fd_(std::move(listen_fd)),
        stop_fd_(std::move(stop_fd)) {}
  void accept_loop();
  void serve(Connection& connection, PeerCred peer);
  // Why a new connection of `peer` is refused (busy), or nullopt. mutex_ held.
  std::optional<std::string> over_limit(const PeerCred& peer) const;
  // Reads the next request line into `line`; false when the connection is
  // to close (EOF, too long, timed out: the error line is already sent).
  bool read_line(int fd, bool admin, std::string& buffer, std::string& line,
                 std::vector<UniqueFd>& fds);
  void reap(bool all);
  void count(std::string_view op, std::string_view result);
  // Its own mutex, held for one map increment: never one snapshot work holds.
  mutable std::mutex counts_mutex_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> counts_;

  ApiServerOptions options_;
  Handler& handler_;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;  // eventfd: wakes the accept loop
  const uid_t self_ = ::geteuid();
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::list<Connection> connections_;
  std::uint64_t connection_count_ = 0;  // accept loop only
};

}  // namespace stepsnap::agent
