// The HTTP view of stepsnapd: pages, the JSON API under /api/v1/, live
// events as Server-Sent Events on /events, Prometheus metrics on /metrics.
//
// Read-only by construction: it reads the catalog through its own read-only
// SQLite connection (view_store.h) and the pool's status with one dm status
// ioctl, and it registers only GET routes. Its threads (cpp-httplib's pool,
// one event tail) share no lock with snapshot work: new events are noticed
// through the hook the daemon passes (EventLog::wait_for, a condition
// variable held only while a commit publishes its seq), by the tail (for
// metrics) and by each /events stream itself.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "agent/view/event_metrics.h"
#include "agent/view/listen_address.h"
#include "agent/view/view_store.h"
#include "common/error.h"

namespace httplib {
class Server;
class Request;
class Response;
}  // namespace httplib

namespace stepsnap::agent {

struct ViewOptions {
  ListenAddress listen;
  std::string catalog_path;
  unsigned low_space_percent = 80;
  // Blocks until an event after `since` is committed or the timeout passes.
  // The daemon passes its EventLog::wait_for; without one the view polls.
  std::function<void(std::uint64_t since, std::chrono::milliseconds timeout)> wait_for_event;
  // Requests to the socket API by (op, result), for /metrics; the daemon
  // passes ApiServer::request_counts. Absent: not reported.
  std::function<std::map<std::pair<std::string, std::string>, std::uint64_t>()> socket_requests;
  // Threads serving requests; each open /events stream holds one.
  std::size_t threads = 16;
};

class ViewServer {
 public:
  // Binds (an address in use is an error naming it), then serves on its own
  // threads until stop().
  static Result<std::unique_ptr<ViewServer>> start(ViewOptions options);
  ~ViewServer();
  ViewServer(const ViewServer&) = delete;
  ViewServer& operator=(const ViewServer&) = delete;

  int port() const { return port_; }
  void stop();

 private:
  explicit ViewServer(ViewOptions options);
  void routes();
  void tail_loop();
  // Newest seq the tail has seen, waiting up to timeout for one after since.
  std::uint64_t wait_newer(std::uint64_t since, std::chrono::milliseconds timeout);
  // What an /events stream waits on for an event after pos, up to slice:
  // the daemon's commit signal when it passed one (one hop from commit to
  // stream, as an events.subscribe follower has), else the tail's.
  void wait_event(std::uint64_t pos, std::chrono::milliseconds slice);
  nlohmann::json pool_json();
  void count(const std::string& op, int status);
  std::string metrics_text();

  ViewOptions options_;
  std::unique_ptr<ViewStore> store_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  std::thread serve_thread_;
  std::thread tail_thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> serve_ended_{false};  // listen_after_bind() returned

  EventMetrics metrics_;
  std::mutex seen_mutex_;
  std::condition_variable seen_changed_;
  std::uint64_t seen_seq_ = 0;

  std::mutex requests_mutex_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> requests_;  // (op, result)
};

}  // namespace stepsnap::agent
