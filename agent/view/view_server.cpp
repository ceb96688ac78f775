#include "agent/view/view_server.h"

#include <httplib.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>

#include "agent/view/html.h"
#include "agent/view/pages.h"
#include "agent/volumes/volumes.h"
#include "common/log.h"
#include "common/time.h"
#include "dm/dm_task.h"
#include "dm/pool_status.h"

namespace stepsnap::agent {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// Pages run no script but the compiled-in /static/live.js: an escaping
// mistake can then still not run a user's script.
constexpr const char* kPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'";

// The pool chart's points: the newest pool.usage events (one per 0.1% move).
constexpr std::size_t kMaxChartPoints = 720;
// The newest pool.low_space / pool.out_of_space events the pool page lists.
constexpr std::size_t kMaxSpaceEvents = 50;

std::optional<std::uint64_t> parse_u64(const std::string& text) {
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// Lists page as the socket API does (docs/api.md, Pages): 1000 by default,
// at most 10000. The HTML lists default to shorter pages a person reads.
constexpr std::size_t kDefaultPage = 1000;
constexpr std::size_t kMaxPage = 10000;
constexpr std::size_t kRunsPerHtmlPage = 50;
constexpr std::size_t kVolumesPerHtmlPage = 100;

// ?limit=N&after=NAME of a list request; an empty after is none.
Result<PageSpec> page_of(const httplib::Request& req, std::size_t default_limit) {
  PageSpec page{.limit = default_limit};
  if (req.has_param("limit")) {
    auto v = parse_u64(req.get_param_value("limit"));
    if (!v || *v == 0 || *v > kMaxPage)
      return fail("list", req.get_param_value("limit"), EINVAL,
                  "limit is a page size of 1 to " + std::to_string(kMaxPage));
    page.limit = static_cast<std::size_t>(*v);
  }
  if (std::string after = req.get_param_value("after"); !after.empty()) page.after = after;
  return page;
}

// The address of the page after this one: the same path and limit, after
// its last item (percent-encoded; the page escapes the whole address).
std::string next_href(const httplib::Request& req, const json& answer) {
  auto next = answer.find("next_after");
  if (next == answer.end()) return "";
  std::string href = req.path + "?";
  if (req.has_param("limit"))
    href += "limit=" + html::url_segment(req.get_param_value("limit")) + "&";
  return href + "after=" + html::url_segment(next->get<std::string>());
}

std::string api_code(const Error& e) {
  switch (e.err) {
    case ENOENT:
      return "not_found";
    case EINVAL:
      return "invalid_value";
    default:
      return "internal";
  }
}

int http_status(const std::string& code) {
  if (code == "not_found") return 404;
  if (code == "invalid_value") return 400;
  return 500;
}

void send_json(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, const Error& e) {
  std::string code = api_code(e);
  send_json(res, {{"error", {{"code", code}, {"message", e.message()}}}}, http_status(code));
}

void send_html(httplib::Response& res, const std::string& body, int status = 200) {
  res.status = status;
  res.set_header("Content-Security-Policy", kPolicy);
  res.set_content(body, "text/html; charset=utf-8");
}

std::string sse_message(const Event& e) {
  return "id: " + std::to_string(e.seq) + "\nevent: " + std::string(to_string(e.type)) +
         "\ndata: " + e.line() + "\n\n";
}

}  // namespace

ViewServer::ViewServer(ViewOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<ViewServer>> ViewServer::start(ViewOptions options) {
  std::unique_ptr<ViewServer> v(new ViewServer(std::move(options)));
  auto store = ViewStore::open(v->options_.catalog_path);
  if (!store) return tl::unexpected(store.error().context("HTTP view"));
  v->store_ = std::move(*store);
  v->http_ = std::make_unique<httplib::Server>();
  const std::size_t threads = v->options_.threads;
  v->http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  v->http_->set_read_timeout(std::chrono::seconds(10));
  v->http_->set_write_timeout(std::chrono::seconds(10));
  v->routes();
  // Server-Timing (W3C): how long the handler took to build the answer,
  // before a byte was sent, so a client (scripts/bench-view, a browser's
  // network panel) can tell the server's part of a request from the
  // transfer's. Each request is one thread's from routing to writing.
  static thread_local Clock::time_point started;
  v->http_->set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    started = Clock::now();
    return httplib::Server::HandlerResponse::Unhandled;
  });
  v->http_->set_post_routing_handler([](const httplib::Request&, httplib::Response& res) {
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    char value[48];
    std::snprintf(value, sizeof value, "app;dur=%.3f", ms);
    res.set_header("Server-Timing", value);
  });
  const ListenAddress& a = v->options_.listen;
  if (a.port == 0) {
    v->port_ = v->http_->bind_to_any_port(a.host);
  } else if (v->http_->bind_to_port(a.host, a.port)) {
    v->port_ = a.port;
  } else {
    v->port_ = -1;
  }
  if (v->port_ < 0) {
    return fail("--http-listen", a.text(), EADDRINUSE,
                "can not listen there (in use, or not an address of this machine); pick another "
                "ADDR:PORT or turn the view off with --http-listen ''");
  }
  v->tail_thread_ = std::thread([s = v.get()] { s->tail_loop(); });
  v->serve_thread_ = std::thread([s = v.get()] {
    if (!s->http_->listen_after_bind() && !s->stopping_) log::error("HTTP view stopped serving");
    s->serve_ended_ = true;
  });
  return v;
}

ViewServer::~ViewServer() { stop(); }

void ViewServer::stop() {
  if (stopping_.exchange(true)) return;
  seen_changed_.notify_all();
  if (http_) {
    // httplib's stop() does nothing until listen_after_bind() has marked the
    // server running: a stop right after the start (a SIGTERM as soon as
    // READY=1) would leave the serve thread in accept() for good, and the
    // daemon with it. Wait until it runs or has ended.
    while (serve_thread_.joinable() && !http_->is_running() && !serve_ended_)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    http_->stop();
  }
  if (serve_thread_.joinable()) serve_thread_.join();
  if (tail_thread_.joinable()) tail_thread_.join();
}

// ---- the event tail: metrics, and the wake-up of /events streams ----------

void ViewServer::tail_loop() {
  std::uint64_t pos = 0;
  while (!stopping_) {
    auto batch = store_->events(pos, 1000);
    if (!batch) {
      log::warn("HTTP view: read events: " + batch.error().message());
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    if (batch->truncated) {
      pos = batch->oldest_available - 1;  // metrics count what the log still holds
      continue;
    }
    for (const auto& e : batch->events) {
      metrics_.feed(e);
      pos = e.seq;
    }
    {
      std::lock_guard lock(seen_mutex_);
      seen_seq_ = pos;
    }
    seen_changed_.notify_all();
    if (batch->events.size() == 1000) continue;
    if (options_.wait_for_event) {
      options_.wait_for_event(pos, std::chrono::milliseconds(200));
    } else {
      std::unique_lock lock(seen_mutex_);
      seen_changed_.wait_for(lock, std::chrono::milliseconds(200),
                             [&] { return stopping_.load(); });
    }
  }
}

std::uint64_t ViewServer::wait_newer(std::uint64_t since, std::chrono::milliseconds timeout) {
  std::unique_lock lock(seen_mutex_);
  seen_changed_.wait_for(lock, timeout, [&] { return seen_seq_ > since || stopping_; });
  return seen_seq_;
}

void ViewServer::wait_event(std::uint64_t pos, std::chrono::milliseconds slice) {
  if (options_.wait_for_event && !stopping_) {
    const auto t0 = Clock::now();
    options_.wait_for_event(pos, slice);
    // A closed log (the daemon stopping) answers at once, every time: rest
    // on the tail's signal then, which stop() wakes, rather than spin.
    if (Clock::now() - t0 >= std::chrono::milliseconds(1)) return;
  }
  wait_newer(pos, slice);
}

// ---- the pool -------------------------------------------------------------

json ViewServer::pool_json() {
  auto rec = store_->pool();
  if (!rec) return {{"status_error", rec.error().message()}};
  if (!*rec) return nullptr;
  json j = {{"name", (*rec)->name},
            {"dm_name", pool_dm_name((*rec)->name)},
            {"block_bytes", (*rec)->block_bytes},
            {"low_space_percent", options_.low_space_percent}};
  // One status ioctl on the pool device: the kernel's answer, without the
  // daemon's kernel mutex.
  auto targets = dm::status(pool_dm_name((*rec)->name));
  if (!targets || targets->empty()) {
    j["status_error"] = targets ? "the pool device has no table" : targets.error().message();
    return j;
  }
  auto st = dm::parse_pool_status(targets->front().params);
  if (!st) {
    j["status_error"] = st.error().message();
    return j;
  }
  j["status"] = {{"mode", dm::to_string(st->mode)},
                 {"used_data_blocks", st->used_data_blocks},
                 {"total_data_blocks", st->total_data_blocks},
                 {"used_metadata_blocks", st->used_metadata_blocks},
                 {"total_metadata_blocks", st->total_metadata_blocks},
                 {"needs_check", st->needs_check}};
  return j;
}

// ---- metrics ---------------------------------------------------------------

void ViewServer::count(const std::string& op, int status) {
  std::string result = status < 400    ? "ok"
                       : status == 404 ? "not_found"
                       : status < 500  ? "invalid"
                                       : "error";
  std::lock_guard lock(requests_mutex_);
  ++requests_[{op, result}];
}

std::string ViewServer::metrics_text() {
  std::string out = metrics_.text();
  json pool = pool_json();
  if (pool.is_object() && pool.contains("status")) {
    const json& st = pool["status"];
    const std::string name = pool.value("name", "");
    const std::uint64_t block = pool.value("block_bytes", std::uint64_t{0});
    auto gauge = [&](const char* metric, const char* help, std::uint64_t v) {
      out += std::string("# HELP ") + metric + " " + help + "\n# TYPE " + metric + " gauge\n" +
             metric + "{pool=\"" + name + "\"} " + std::to_string(v) + "\n";
    };
    gauge("stepsnap_pool_data_used_bytes", "Data space of the thin pool in use.",
          st["used_data_blocks"].get<std::uint64_t>() * block);
    gauge("stepsnap_pool_data_size_bytes", "Data space of the thin pool.",
          st["total_data_blocks"].get<std::uint64_t>() * block);
    // Thin-pool metadata blocks are 4 KiB (kernel thin-provisioning.rst).
    gauge("stepsnap_pool_metadata_used_bytes", "Metadata space of the thin pool in use.",
          st["used_metadata_blocks"].get<std::uint64_t>() * 4096);
    gauge("stepsnap_pool_metadata_size_bytes", "Metadata space of the thin pool.",
          st["total_metadata_blocks"].get<std::uint64_t>() * 4096);
    gauge("stepsnap_pool_needs_check", "1 when the pool needs thin_check.",
          st.value("needs_check", false) ? 1 : 0);
  }
  // Steps by state, from the catalog as it is now.
  out +=
      "# HELP stepsnap_steps Steps the catalog records, by state.\n# TYPE stepsnap_steps gauge\n";
  std::map<std::string, std::uint64_t> by_state;
  for (const char* s : {"registered", "holding", "running", "finishing", "finished", "failed"})
    by_state[s] = 0;
  {
    std::lock_guard lock(store_->db().mutex());
    auto st = store_->db().prepare("SELECT state, COUNT(*) FROM steps GROUP BY state");
    if (st) {
      while (true) {
        auto row = st->step();
        if (!row || !*row) break;
        by_state[st->text(0)] = static_cast<std::uint64_t>(st->int64(1));
      }
    }
  }
  for (const auto& [s, n] : by_state)
    out += "stepsnap_steps{state=\"" + s + "\"} " + std::to_string(n) + "\n";
  if (options_.socket_requests) {
    out +=
        "# HELP stepsnap_api_requests_total Requests to the socket API, by op and result (ok or "
        "the error code).\n# TYPE stepsnap_api_requests_total counter\n";
    for (const auto& [key, n] : options_.socket_requests())
      out += "stepsnap_api_requests_total{op=\"" + key.first + "\",result=\"" + key.second +
             "\"} " + std::to_string(n) + "\n";
  }
  out +=
      "# HELP stepsnap_http_requests_total Requests to the HTTP view, by op and result.\n"
      "# TYPE stepsnap_http_requests_total counter\n";
  std::lock_guard lock(requests_mutex_);
  for (const auto& [key, n] : requests_)
    out += "stepsnap_http_requests_total{op=\"" + key.first + "\",result=\"" + key.second + "\"} " +
           std::to_string(n) + "\n";
  return out;
}

// ---- routes ----------------------------------------------------------------

void ViewServer::routes() {
  auto& s = *http_;
  using Req = httplib::Request;
  using Res = httplib::Response;

  // Pages.
  // A list page's error: a bad limit (400) or an after that names nothing
  // (404, naming it), else the catalog's error (500).
  auto list_error = [](Res& res, const Error& e) {
    if (e.err == ENOENT)
      return send_html(res, not_found_page("list position", e.object, e.detail), 404);
    send_html(res, html::page("Error", "<p>" + html::escape(e.message()) + "</p>"),
              e.err == EINVAL ? 400 : 500);
  };
  s.Get("/", [this, list_error](const Req& req, Res& res) {
    auto page = page_of(req, kRunsPerHtmlPage);
    auto runs = page ? store_->runs(*page) : Result<json>(tl::unexpected(page.error()));
    if (!runs) {
      list_error(res, runs.error());
    } else {
      send_html(res, runs_page((*runs)["runs"], next_href(req, *runs)));
    }
    count("page.runs", res.status);
  });
  s.Get(R"(/runs/([^/]+)/([^/]+))", [this](const Req& req, Res& res) {
    auto run = store_->run(req.matches[1], req.matches[2]);
    if (!run && run.error().err == ENOENT) {
      send_html(
          res,
          not_found_page("run", std::string(req.matches[1]) + "/" + std::string(req.matches[2]),
                         "no steps or snapshots of that pipeline and run in the catalog"),
          404);
    } else if (!run) {
      send_html(res, html::page("Error", "<p>" + html::escape(run.error().message()) + "</p>"),
                500);
    } else {
      send_html(res, run_page(*run));
    }
    count("page.run", res.status);
  });
  s.Get(R"(/snapshots/([^/]+))", [this](const Req& req, Res& res) {
    auto snap = store_->snapshot(req.matches[1]);
    if (!snap && (snap.error().err == ENOENT || snap.error().err == EINVAL)) {
      send_html(res, not_found_page("snapshot", req.matches[1], snap.error().detail), 404);
    } else if (!snap) {
      send_html(res, html::page("Error", "<p>" + html::escape(snap.error().message()) + "</p>"),
                500);
    } else {
      send_html(res, snapshot_page(*snap));
    }
    count("page.snapshot", res.status);
  });
  s.Get("/pool", [this, list_error](const Req& req, Res& res) {
    PoolView v;
    auto page = page_of(req, kVolumesPerHtmlPage);
    auto vols = page ? store_->volumes(*page) : Result<json>(tl::unexpected(page.error()));
    if (!vols) {
      list_error(res, vols.error());
      count("page.pool", res.status);
      return;
    }
    v.volumes = (*vols)["volumes"];
    v.volumes_next_href = next_href(req, *vols);
    v.pool = pool_json();
    v.low_space_percent = options_.low_space_percent;
    // Both from the event log, newest first through its type index: the
    // chart survives restarts and costs the same however long the log is.
    v.space_events = json::array();
    if (auto space = read_latest_events(store_->db(),
                                        {EventType::pool_low_space, EventType::pool_out_of_space},
                                        kMaxSpaceEvents)) {
      for (const auto& e : *space) v.space_events.push_back(e.to_json());
    }
    v.samples = json::array();
    if (auto usage = read_latest_events(store_->db(), {EventType::pool_usage}, kMaxChartPoints)) {
      for (const auto& e : *usage) {
        v.samples.push_back({{"time_ns", e.time_ns},
                             {"data_percent", e.data.value("data_percent", 0.0)},
                             {"metadata_percent", e.data.value("metadata_percent", 0.0)}});
      }
    }
    send_html(res, pool_page(v));
    count("page.pool", res.status);
  });
  s.Get("/live", [this](const Req&, Res& res) {
    send_html(res, live_page());
    count("page.live", res.status);
  });
  s.Get("/static/live.js", [](const Req&, Res& res) {
    res.set_content(html::live_script(), "text/javascript");
  });

  // Server-Sent Events: the id of each is its seq, so EventSource's
  // reconnect (Last-Event-ID) resumes after the last one the client saw.
  s.Get("/events", [this](const Req& req, Res& res) {
    std::string from = req.get_header_value("Last-Event-ID");
    if (from.empty() && req.has_param("since")) from = req.get_param_value("since");
    std::uint64_t since = 0;
    if (!from.empty()) {
      auto v = parse_u64(from);
      if (!v) {
        res.status = 400;
        res.set_content(
            "Last-Event-ID or since must be an event sequence number, got " + from + "\n",
            "text/plain");
        count("events", res.status);
        return;
      }
      since = *v;
    }
    auto check = store_->events(since, 1);
    if (!check) {
      res.status = 400;
      res.set_content(check.error().message() + "\n", "text/plain");
      count("events", res.status);
      return;
    }
    count("events", 200);
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, pos = since, first = true, last_write = Clock::now()](
            std::size_t, httplib::DataSink& sink) mutable -> bool {
          if (stopping_) {
            sink.done();
            return true;
          }
          std::string out;
          if (first) {
            out = "retry: 1000\n\n";
            first = false;
          }
          auto batch = store_->events(pos, 500);
          if (!batch) {
            out +=
                "event: error\ndata: " + json{{"message", batch.error().message()}}.dump() + "\n\n";
            sink.write(out.data(), out.size());
            sink.done();
            return true;
          }
          if (batch->truncated) {
            // Never a silent gap: say which events are gone, then go on
            // from the oldest the log still holds.
            out += "event: events.truncated\ndata: " +
                   json{{"after", pos}, {"oldest_available", batch->oldest_available}}.dump() +
                   "\n\n";
            pos = batch->oldest_available - 1;
          }
          for (const auto& e : batch->events) {
            out += sse_message(e);
            pos = e.seq;
          }
          if (out.empty()) {
            if (Clock::now() - last_write < std::chrono::seconds(15)) {
              // A short slice: stop() can not wake the daemon's signal,
              // so a stream notices it within one.
              wait_event(pos, std::chrono::milliseconds(250));
              return true;  // httplib calls again: read what came
            }
            out = ": keepalive\n\n";  // lets a dead client be noticed
          }
          if (!sink.write(out.data(), out.size())) return false;
          last_write = Clock::now();
          return true;
        });
  });

  s.Get("/metrics", [this](const Req&, Res& res) {
    count("metrics", 200);
    res.set_content(metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
  });

  // The JSON API: the socket API's read ops, plus pipelines and runs.
  auto api = [this, &s](const std::string& pattern, const std::string& op,
                        std::function<Result<json>(const Req&)> fn) {
    s.Get(pattern, [this, op, fn](const Req& req, Res& res) {
      auto r = fn(req);
      if (r) {
        send_json(res, *r);
      } else {
        send_error(res, r.error());
      }
      count(op, res.status);
    });
  };
  api("/api/v1/volumes", "volume.list", [this](const Req& req) -> Result<json> {
    auto page = page_of(req, kDefaultPage);
    if (!page) return tl::unexpected(page.error());
    auto v = store_->volumes(*page);
    if (v) (*v)["pool"] = pool_json();
    return v;
  });
  api("/api/v1/pool", "pool.show", [this](const Req&) -> Result<json> { return pool_json(); });
  api("/api/v1/snapshots", "snapshot.list", [this](const Req& req) -> Result<json> {
    DeviceFilter f;
    if (req.has_param("pipeline")) f.pipeline = req.get_param_value("pipeline");
    if (req.has_param("run")) f.run = req.get_param_value("run");
    if (req.has_param("step")) f.step = req.get_param_value("step");
    auto page = page_of(req, kDefaultPage);
    if (!page) return tl::unexpected(page.error());
    return store_->snapshots(f, req.get_param_value("volume"), *page);
  });
  api(R"(/api/v1/snapshots/([^/]+))", "snapshot.show",
      [this](const Req& req) { return store_->snapshot(req.matches[1]); });
  api("/api/v1/pipelines", "pipeline.list", [this](const Req& req) -> Result<json> {
    auto page = page_of(req, kDefaultPage);
    if (!page) return tl::unexpected(page.error());
    return store_->pipelines(*page);
  });
  api("/api/v1/runs", "run.list", [this](const Req& req) -> Result<json> {
    auto page = page_of(req, kDefaultPage);
    if (!page) return tl::unexpected(page.error());
    return store_->runs(*page);
  });
  api(R"(/api/v1/runs/([^/]+)/([^/]+))", "run.show",
      [this](const Req& req) { return store_->run(req.matches[1], req.matches[2]); });
  api(R"(/api/v1/runs/([^/]+)/([^/]+)/steps)", "step.list", [this](const Req& req) -> Result<json> {
    auto r = store_->run(req.matches[1], req.matches[2]);
    if (!r) return r;
    return json{{"steps", (*r)["steps"]}};
  });
  api(R"(/api/v1/runs/([^/]+)/([^/]+)/steps/([^/]+))", "step.status", [this](const Req& req) {
    return store_->step(req.matches[1], req.matches[2], req.matches[3]);
  });
  api("/api/v1/events", "events.list", [this](const Req& req) -> Result<json> {
    std::uint64_t since = 0, max = 1000;
    if (req.has_param("since")) {
      auto v = parse_u64(req.get_param_value("since"));
      if (!v)
        return fail("events", req.get_param_value("since"), EINVAL, "since is a sequence number");
      since = *v;
    }
    if (req.has_param("max")) {
      auto v = parse_u64(req.get_param_value("max"));
      if (!v || *v == 0 || *v > 10000)
        return fail("events", req.get_param_value("max"), EINVAL, "max is 1 to 10000");
      max = *v;
    }
    auto batch = store_->events(since, max);
    if (!batch) return tl::unexpected(batch.error());
    json events = json::array();
    for (const auto& e : batch->events) events.push_back(e.to_json());
    json out = {{"events", events}, {"last_seq", batch->last_seq}};
    if (batch->truncated) {
      out["truncated"] = true;
      out["oldest_available"] = batch->oldest_available;
    }
    return out;
  });

  // Anything else: a page (or, under /api/, JSON) naming what was asked.
  s.set_error_handler([](const Req& req, Res& res) {
    if (!res.body.empty()) return;
    if (res.status == 404 && req.path.rfind("/api/", 0) == 0) {
      send_json(res, {{"error", {{"code", "not_found"}, {"message", "no API route " + req.path}}}},
                404);
    } else if (res.status == 404) {
      send_html(res, not_found_page("page", req.path, "the view has no such page"), 404);
    }
  });
}

}  // namespace stepsnap::agent
