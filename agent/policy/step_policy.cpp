#include "agent/policy/step_policy.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <set>
#include <sstream>

#include "agent/policy/post_settle.h"
#include "agent/policy/step_records.h"
#include "common/cgroup_files.h"
#include "common/log.h"
#include "common/text.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

std::string step_key(const std::string& pipeline, const std::string& run, const std::string& step) {
  return pipeline + "/" + run + "/" + step;
}

std::optional<int> exit_status_of(const std::optional<bpf::ExitStatus>& e) {
  if (!e) return std::nullopt;
  if (e->code) return *e->code;
  if (e->signal) return 128 + *e->signal;
  return std::nullopt;
}

json step_ref(const StepSpec& a) {
  return {{"pipeline", a.pipeline}, {"run", a.run}, {"step", a.step}};
}

}  // namespace

std::string_view policy_name(const StepSpec& spec) {
  if (spec.pre_snapshot) return spec.post_snapshot ? "both" : "pre";
  return spec.post_snapshot ? "post" : "none";
}

Result<std::unique_ptr<StepPolicy>> StepPolicy::start(Volumes& volumes, Catalog& catalog,
                                                      EventLog& events,
                                                      const StepPolicyOptions& options) {
  auto tracer = bpf::StepTracer::open(options.tracer);
  if (!tracer) return tl::unexpected(tracer.error().context("start step tracer"));
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return fail_errno("start step policy", "eventfd");
  std::unique_ptr<StepPolicy> p(
      new StepPolicy(volumes, catalog, events, std::move(*tracer), options, std::move(wake)));
  p->adopt_steps();
  // What the kernel side recorded while no agent ran (held execs, step
  // ends) is handled now, before the API serves anyone.
  auto callback = [s = p.get()](const bpf::Event& e) { s->on_event(e); };
  if (auto r = p->tracer_->poll(std::chrono::milliseconds(0), callback); !r)
    log::error("step tracer: " + r.error().message());
  // And the snapshots that follows from it are taken before start()
  // returns: a step that ended while no agent ran gets its post-snapshot
  // before a new step can be registered on its clones.
  auto adopted_work = std::make_shared<std::promise<void>>();
  auto adopted_done = adopted_work->get_future();
  if (!p->adopted_.empty()) p->post_work([adopted_work] { adopted_work->set_value(); });
  p->tracer_thread_ = std::thread([s = p.get()] { s->tracer_loop(); });
  p->worker_thread_ = std::thread([s = p.get()] { s->worker_loop(); });
  if (!p->adopted_.empty()) adopted_done.wait();
  return p;
}

bpf::WatchOptions StepPolicy::watch_options(const StepSpec& spec) const {
  // The tracer's timeout kills, never resumes: the policy's own deadline
  // (kTracerHoldGrace earlier) normally acts first, and if it could not,
  // the step still never runs without its pre-snapshot.
  return {.hold_first_exec = spec.pre_snapshot,
          .hold_timeout = options_.hold_timeout + kTracerHoldGrace,
          .on_hold_timeout = bpf::HoldExpiry::kill,
          .boundaries_only = true};
}

void StepPolicy::adopt_steps() {
  if (!tracer_->adopted()) return;
  auto records = catalog_.unfinished_steps();
  if (!records) {
    log::error("adopt steps: " + records.error().message());
    return;
  }
  std::string subtree = options_.cgroup_subtree;
  if (subtree.empty()) {
    auto d = default_step_cgroup_subtree();
    if (d) subtree = *d;
  }
  for (const auto& r : *records) adopt_step(r, subtree);
  if (int dropped = tracer_->drop_unadopted(); dropped > 0)
    log::warn("step tracer: dropped " + std::to_string(dropped) +
              " pinned watches of steps the catalog does not have under way");
}

namespace {

std::optional<StepState> parse_state(const std::string& s) {
  for (StepState st :
       {StepState::registered, StepState::preparing, StepState::armed, StepState::holding,
        StepState::running, StepState::finishing, StepState::finished, StepState::failed})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

}  // namespace

void StepPolicy::adopt_step(const StepRecord& r, const std::string& subtree) {
  const std::string key = step_key(r.pipeline, r.run, r.step);
  auto state = parse_state(r.state);
  if (!state) return;
  // Only the very cgroup registered, as register_step() checked it.
  auto cgroup = StepCgroup::open(r.cgroup, subtree);
  if (!cgroup || cgroup->id() != r.cgroup_id) {
    log::warn("step " + key + ": not adopted: its cgroup " + r.cgroup +
              (cgroup ? " is another directory now" : ": " + cgroup.error().message()));
    return;
  }
  StepSpec spec;
  spec.pipeline = r.pipeline;
  spec.run = r.run;
  spec.step = r.step;
  spec.cgroup = r.cgroup;
  spec.volumes = r.volumes;
  spec.pre_snapshot = r.policy == "pre" || r.policy == "both";
  spec.post_snapshot = r.policy == "post" || r.policy == "both";
  spec.command = r.command;
  spec.labels = r.labels;
  auto a = tracer_->adopt(r.cgroup, r.cgroup_id, watch_options(spec));
  if (!a) {
    log::warn("step " + key + ": not adopted: " + a.error().message());
    return;
  }
  std::lock_guard lock(mutex_);
  Step s;
  s.args = spec;
  s.cgroup_id = r.cgroup_id;
  s.cgroup = std::make_shared<const StepCgroup>(std::move(*cgroup));
  s.state = *state;
  s.exit = a->main_exit;
  s.pid = a->held ? a->held_pid : a->main_pid;
  s.registered_ns = r.registered_ns;
  s.started_ns = r.started_ns;
  s.held_ns = r.held_ns;
  s.pre_snapshots = r.pre_snapshots;
  s.post_snapshots = r.post_snapshots;
  s.error = r.error;
  s.watching = true;
  s.life = ++lives_;
  auto now = std::chrono::steady_clock::now();
  s.lease_deadline = now + options_.step_lease;
  s.hold_deadline = now + options_.hold_timeout;
  Step& st = steps_[key] = std::move(s);
  by_cgroup_[r.cgroup_id] = key;
  adopted_.insert(key);
  emit(EventType::agent_recovered, {{"action", "adopt_step"},
                                    {"pipeline", r.pipeline},
                                    {"run", r.run},
                                    {"step", r.step},
                                    {"was", r.state},
                                    {"held", a->held},
                                    {"ended", a->ended},
                                    {"cgroup", r.cgroup}});
  log::info("step " + key + ": adopted (was " + r.state + (a->held ? ", held" : "") +
            (a->ended ? ", ended" : "") + ")");

  const char* kLost =
      "the step's first exec could not be held while no agent ran (the tracer could not report "
      "it); the kernel killed it before its first instruction";
  const char* kBroken =
      "the held step was continued from outside (SIGCONT) while no agent ran; the kernel killed "
      "it before its first instruction";
  if ((a->escaped || a->untracked) &&
      (st.state == StepState::registered || st.state == StepState::preparing ||
       st.state == StepState::armed || st.state == StepState::holding ||
       st.state == StepState::running)) {
    st.error = a->escaped ? "a process of the step left its cgroup while no agent ran; killed"
                          : "a process of the step could not be counted while no agent ran (the "
                            "tracer's process map was full); killed";
    // The escaped process is beyond the cgroup's kill: every process the
    // tracer counts for the step goes, wherever it is now.
    if (auto k = tracer_->kill_counted(r.cgroup_id); !k)
      log::warn("step " + key + ": " + k.error().message());
    else if (*k > 0)
      log::info("step " + key + ": killed " + std::to_string(*k) + " counted processes");
    apply(key, st, StepInput::lost_track);
    return;
  }
  switch (st.state) {
    case StepState::registered:
      if (a->hold_lost || a->hold_broken) {
        st.error = a->hold_lost ? kLost : kBroken;
        apply(key, st, StepInput::hold_lost);  // registered -> failed, kill
      } else if (a->held && !st.pre_snapshots.empty()) {
        // Armed at runner's gate (recorded as registered, with its
        // pre-snapshots): runner had the answer and let CMD exec, and the
        // exec is held. Its pre-snapshots are taken: it goes.
        st.state = StepState::armed;
        st.exec_mono_ns = bpf::monotonic_ns();
        apply(key, st, StepInput::held_exec);
      } else if (a->held) {
        // Held while no agent ran: its pre-snapshot now, as at any hold.
        st.exec_mono_ns = bpf::monotonic_ns();
        apply(key, st, StepInput::held_exec);
      }
      break;
    case StepState::preparing:
    case StepState::armed:
      break;  // never in the catalog: persist() records them as registered
    case StepState::holding:
      if (a->held) {
        // The agent died before it released the step: its pre-snapshots
        // are taken (again, if the group was never recorded), then it goes.
        if (!st.pre_snapshots.empty()) {
          apply(key, st, StepInput::pre_done);
        } else {
          post_work([this, key] { take_snapshots(key, Phase::pre); });
        }
      } else {
        st.error = a->hold_lost || a->hold_broken
                       ? std::string(a->hold_broken ? kBroken : kLost)
                       : "its held process was gone when stepsnapd restarted; no pre-snapshot";
        apply(key, st, a->hold_broken ? StepInput::hold_broken : StepInput::pre_failed);
      }
      break;
    case StepState::running:
      // Recorded running, still held: the agent died between deciding the
      // release and sending it.
      if (a->held) {
        if (auto rel = tracer_->release(st.cgroup_id); !rel)
          log::warn("step " + key + ": release: " + rel.error().message());
      }
      break;
    case StepState::finishing:
      // The post-snapshot was under way: the step's processes are all gone,
      // so nothing has written its volumes since. Take it now.
      if (st.post_snapshots.empty()) {
        post_work([this, key] { take_snapshots(key, Phase::post); });
      } else {
        apply(key, st, StepInput::post_done);
        finish_step(key, st);
      }
      break;
    case StepState::finished:
    case StepState::failed:
      break;
  }
}

StepPolicy::StepPolicy(Volumes& volumes, Catalog& catalog, EventLog& events, bpf::StepTracer tracer,
                       const StepPolicyOptions& options, UniqueFd wake)
    : volumes_(volumes),
      catalog_(catalog),
      events_(events),
      options_(options),
      tracer_(std::move(tracer)),
      wake_(std::move(wake)) {}

StepPolicy::~StepPolicy() { stop(); }

void StepPolicy::stop() {
  {
    // Wakes step.ready waits: they answer ESHUTDOWN, and runner's gate
    // stays shut.
    std::lock_guard lock(mutex_);
    closing_ = true;
  }
  state_cv_.notify_all();
  {
    std::lock_guard lock(queue_mutex_);
    if (stopping_ && !worker_thread_.joinable() && !tracer_thread_.joinable()) return;
    stopping_ = true;
  }
  work_cv_.notify_all();
  // The worker first: the snapshot under way finishes and queues its
  // release, which the tracer thread still runs before it stops.
  if (worker_thread_.joinable()) worker_thread_.join();
  std::uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof one) < 0)
    log::warn("step policy: wake tracer thread failed");
  if (tracer_thread_.joinable()) tracer_thread_.join();
}

void StepPolicy::post_work(std::function<void()> fn) {
  {
    std::lock_guard lock(queue_mutex_);
    work_queue_.push_back(std::move(fn));
  }
  work_cv_.notify_all();
}

void StepPolicy::post_tracer(std::function<void(bpf::StepTracer&)> fn) {
  {
    std::lock_guard lock(queue_mutex_);
    tracer_queue_.push_back(std::move(fn));
  }
  std::uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof one) < 0)
    log::warn("step policy: wake tracer thread failed");
}

Status StepPolicy::on_tracer(std::function<Status(bpf::StepTracer&)> fn) {
  auto done = std::make_shared<std::promise<Status>>();
  auto result = done->get_future();
  {
    std::lock_guard lock(queue_mutex_);
    if (stopping_) return fail("step tracer", "", ESHUTDOWN, "the agent is stopping");
  }
  post_tracer([fn = std::move(fn), done](bpf::StepTracer& t) { done->set_value(fn(t)); });
  return result.get();
}

void StepPolicy::worker_loop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(queue_mutex_);
      work_cv_.wait(lock, [&] { return stopping_ || !work_queue_.empty(); });
      if (work_queue_.empty()) return;  // stopping and idle
      job = std::move(work_queue_.front());
      work_queue_.pop_front();
    }
    job();
  }
}

void StepPolicy::tracer_loop() {
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_.get();
  ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, wake_.get(), &ev);
  ev.data.fd = tracer_->fd();
  ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, tracer_->fd(), &ev);
  auto callback = [this](const bpf::Event& e) { on_event(e); };
  std::optional<std::chrono::steady_clock::time_point> hold_due;
  for (;;) {
    int timeout_ms = 1000;
    for (auto d : {tracer_->next_deadline(), hold_due}) {
      if (!d) continue;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      *d - std::chrono::steady_clock::now())
                      .count();
      timeout_ms = std::min(timeout_ms, static_cast<int>(std::clamp<long long>(left + 1, 0, 1000)));
    }
    epoll_event events[4];
    int n = ::epoll_wait(ep.get(), events, 4, timeout_ms);
    if (n < 0 && errno != EINTR)
      log::error(std::string("step tracer: epoll: ") + std::strerror(errno));
    std::uint64_t count = 0;
    if (::read(wake_.get(), &count, sizeof count) < 0 && errno != EAGAIN) {
      log::warn("step tracer: read eventfd failed");
    }
    std::deque<std::function<void(bpf::StepTracer&)>> commands;
    bool stop = false;
    {
      std::lock_guard lock(queue_mutex_);
      commands.swap(tracer_queue_);
      stop = stopping_;
    }
    for (auto& c : commands) c(*tracer_);
    if (auto r = tracer_->poll(std::chrono::milliseconds(0), callback); !r) {
      log::error("step tracer: " + r.error().message());
    }
    hold_due = enforce_hold_deadlines();
    enforce_leases();
    if (stop) {
      // Watches end with the tracer. First the releases the worker queued
      // run; then every step still held is killed: once the programs are
      // detached nothing would tell a SIGCONT from a release. Volumes stay
      // as they are.
      {
        std::lock_guard lock(queue_mutex_);
        for (auto& c : tracer_queue_) c(*tracer_);
        tracer_queue_.clear();
      }
      // Pinned, the programs stay and guard every hold: the held steps
      // wait, stopped, for the next agent to adopt them.
      if (options_.tracer.pin_dir.empty()) abandon_holds();
      std::lock_guard lock(queue_mutex_);
      for (auto& c : tracer_queue_) c(*tracer_);
      tracer_queue_.clear();
      tracer_.reset();
      return;
    }
  }
}

std::optional<std::chrono::steady_clock::time_point> StepPolicy::enforce_hold_deadlines() {
  std::optional<std::chrono::steady_clock::time_point> next;
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  for (auto& [key, s] : steps_) {
    if (s.state != StepState::holding) continue;
    if (now < s.hold_deadline) {
      if (!next || s.hold_deadline < *next) next = s.hold_deadline;
      continue;
    }
    auto seconds = std::chrono::duration_cast<std::chrono::duration<double>>(options_.hold_timeout);
    std::ostringstream text;
    text << "the pre-snapshot was not taken within the hold timeout (" << seconds.count()
         << " s); killed while still held";
    s.error = text.str();
    apply(key, s, StepInput::hold_timeout);
  }
  return next;
}

void StepPolicy::abandon_holds() {
  std::lock_guard lock(mutex_);
  for (auto& [key, s] : steps_) {
    if (s.state != StepState::holding) continue;
    s.error =
        "stepsnapd stopped while the step was held for its pre-snapshot; killed, since nothing "
        "guards a held step while no agent runs";
    apply(key, s, StepInput::abandon);
  }
}

void StepPolicy::enforce_leases() {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  for (auto& [key, s] : steps_) {
    if (s.state != StepState::registered) continue;
    struct stat st {};
    if (::stat(s.args.cgroup.c_str(), &st) != 0 && errno == ENOENT) {
      s.error = "its cgroup " + s.args.cgroup +
                " was removed before the step started; registration expired";
      expire(key, s, "step.expire", StepInput::expired);
      continue;
    }
    // A pod step waits for its container as long as its pod exists: an
    // image pull may take minutes, and the sandbox keeps the pod populated.
    if (!s.pod_cgroup.empty()) continue;
    if (now < s.lease_deadline) continue;
    // A process there may still be setting up (mounts) before its exec:
    // the lease only ends a registration nobody is using.
    auto populated = s.cgroup ? s.cgroup->populated() : cgroup_populated(s.args.cgroup);
    if (populated && *populated) continue;
    auto seconds = std::chrono::duration_cast<std::chrono::duration<double>>(options_.step_lease);
    std::ostringstream text;
    text << "no process entered its cgroup " << s.args.cgroup << " within the step lease ("
         << seconds.count() << " s); registration expired, register it again to run it";
    s.error = text.str();
    expire(key, s, "step.expire", StepInput::expired);
  }
}

void StepPolicy::connection_closed(std::uint64_t connection) {
  if (connection == 0) return;
  std::lock_guard lock(mutex_);
  for (auto& [key, s] : steps_) {
    if (s.args.connection != connection) continue;
    if (s.state == StepState::preparing || s.state == StepState::armed) {
      s.error =
          "the connection that asked step.ready closed while the step waited at runner's "
          "gate; CMD never ran; killed";
      expire(key, s, "step.expire", StepInput::expired);
      continue;
    }
    if (s.state != StepState::registered) continue;
    auto populated = s.cgroup ? s.cgroup->populated() : cgroup_populated(s.args.cgroup);
    if (populated && *populated) continue;
    s.error = "the connection that registered it closed before any process entered its cgroup " +
              s.args.cgroup + "; registration expired, register it again to run it";
    expire(key, s, "step.expire", StepInput::expired);
  }
}

void StepPolicy::expire(const std::string& key, Step& s, const std::string& op, StepInput input) {
  auto sp = Savepoint::begin(catalog_.db());
  if (!sp) log::error("step " + key + ": " + sp.error().message());
  log::warn("step " + key + ": " + s.error);
  json data = step_ref(s.args);
  data["op"] = op;
  data["message"] = s.error;
  data["cgroup"] = s.args.cgroup;
  emit(EventType::error, data);
  apply(key, s, input);  // -> failed, finish: step.finished, stop watching
  if (sp) {
    if (auto c = sp->commit(); !c) log::error("step " + key + ": " + c.error().message());
  }
}

Result<json> StepPolicy::unregister_step(const std::string& pipeline, const std::string& run,
                                         const std::string& step) {
  const std::string key = step_key(pipeline, run, step);
  {
    std::lock_guard lock(mutex_);
    auto it = steps_.find(key);
    if (it != steps_.end()) {
      Step& s = it->second;
      if (s.state == StepState::finished || s.state == StepState::failed) return step_json(s);
      if (s.state != StepState::registered && s.state != StepState::preparing &&
          s.state != StepState::armed) {
        return fail("unregister step", key, EBUSY,
                    "the step has started (" + std::string(to_string(s.state)) +
                        "); it ends when its processes exit");
      }
      // A process that has not exec'd yet would run its command unwatched
      // once the watch is gone: the cgroup belongs to the step, so it goes.
      // Not a pod's own cgroup before its container was picked: that holds
      // the pod's sandbox and init containers, never the step's.
      bool pod_waiting = !s.pod_cgroup.empty() && s.args.cgroup == s.pod_cgroup;
      auto populated = s.cgroup ? s.cgroup->populated() : cgroup_populated(s.args.cgroup);
      if (!pod_waiting && populated && *populated) {
        if (auto k = kill_step_cgroup(s); !k) {
          return tl::unexpected(k.error().context("unregister step " + key));
        }
      }
      s.error = "unregistered before it started: its launcher gave up on it (nothing ran)";
      log::info("step " + key + ": " + s.error);
      apply(key, s, StepInput::unregister);
      return step_json(s);
    }
  }
  // Not in memory: over, or from before a restart (recovery failed it).
  auto rec = catalog_.find_step(pipeline, run, step);
  if (!rec) return tl::unexpected(rec.error().context("unregister step"));
  if (!*rec) return fail("unregister step", key, ENOENT, "no such step registered");
  return step_record_json(**rec);
}

Result<json> StepPolicy::step_ready(const std::string& pipeline, const std::string& run,
                                    const std::string& step, std::uint64_t registration,
                                    std::uint64_t connection) {
  const std::string key = step_key(pipeline, run, step);
  const std::string what = "open the gate of step " + key;
  std::unique_lock lock(mutex_);
  auto it = steps_.find(key);
  if (it == steps_.end()) return fail(what, key, ENOENT, "no such step registered and not over");
  Step& s = it->second;
  if (s.life != registration) {
    return fail(what, key, ESTALE,
                "registration " + std::to_string(registration) + " is not the step's (it is " +
                    std::to_string(s.life) +
                    "): the step was registered again, or stepsnapd restarted");
  }
  if (s.args.connection != 0 && s.args.connection != connection) {
    return fail(what, key, EPERM,
                "step.ready must come over the connection that registered the step");
  }
  if (s.state != StepState::registered) {
    return fail(what, key, EBUSY,
                "the step is " + std::string(to_string(s.state)) +
                    "; step.ready comes once, before any process of the step exec'd");
  }
  s.hold = {.gate = bpf::monotonic_ns()};
  apply(key, s, StepInput::gate_ready);
  const std::uint64_t life = s.life;
  // Answered from memory: the step cannot leave it before it is over, and
  // the wait below looks it up again by name and life at each wake.
  Step* found = nullptr;
  state_cv_.wait(lock, [&] {
    if (closing_) return true;
    auto i = steps_.find(key);
    found = i != steps_.end() && i->second.life == life ? &i->second : nullptr;
    return !found || found->state != StepState::preparing;
  });
  if (closing_ && (!found || found->state == StepState::preparing))
    return fail(what, key, ESHUTDOWN, "stepsnapd is stopping; CMD must not run");
  if (!found) return fail(what, key, ECANCELED, "the step is over; see step.status");
  if (found->state != StepState::armed) {
    Error e{
        what, key, 0,
        found->error.empty() ? "the step failed before its pre-snapshot was taken" : found->error};
    e.kind = "pre_snapshot_failed";
    return tl::unexpected(e);
  }
  json answer = step_json(*found);
  answer["registration"] = life;
  return answer;
}

void StepPolicy::emit(EventType type, json data) {
  auto r = events_.append(type, std::move(data));
  if (!r) log::error("event " + std::string(to_string(type)) + ": " + r.error().message());
}

StepRecord StepPolicy::record_of(const Step& s) const {
  StepRecord r;
  r.pipeline = s.args.pipeline;
  r.run = s.args.run;
  r.step = s.args.step;
  r.cgroup = s.args.cgroup;
  r.cgroup_id = s.cgroup_id;
  r.policy = std::string(policy_name(s.args));
  r.volumes = s.args.volumes;
  r.command = s.args.command;
  r.labels = s.args.labels;
  r.state = std::string(to_string(s.state));
  r.exit_status = exit_status_of(s.exit);
  r.error = s.error;
  r.registered_ns = s.registered_ns;
  r.started_ns = s.started_ns;
  r.finished_ns = s.finished_ns;
  r.held_ns = s.held_ns;
  r.pre_snapshots = s.pre_snapshots;
  r.post_snapshots = s.post_snapshots;
  return r;
}

void StepPolicy::persist(const std::string& key, const Step& s) {
  StepRecord r = record_of(s);
  // The gate's states live only as long as runner's connection, which an
  // agent restart closes: the catalog knows them as registered (with the
  // pre-snapshots once taken), and adopt_step() goes on from there.
  if (s.state == StepState::preparing || s.state == StepState::armed) r.state = "registered";
  if (auto w = catalog_.save_step(r); !w) {
    log::error("step " + key + ": " + w.error().message());
  }
}

Result<json> StepPolicy::register_step(const StepSpec& args) {
  const std::string key = step_key(args.pipeline, args.run, args.step);
  for (const auto& v : args.volumes) {
    auto d = volumes_.find(v);
    if (!d) return tl::unexpected(d.error().context("register step " + key));
    if (d->kind == DeviceKind::snapshot) {
      return fail("register step " + key, v, EINVAL,
                  "it is a snapshot; steps run on volumes or clones (clone it first)");
    }
    if (d->dm_name.empty()) {
      return fail("register step " + key, v, ENXIO, "volume is not active");
    }
  }
  // The cgroup: beneath the agent's subtree, opened without following a
  // symlink, empty (a step is registered before anything runs in it, so a
  // populated cgroup is someone else's processes), held open from now on.
  std::string subtree = options_.cgroup_subtree;
  if (subtree.empty()) {
    auto d = default_step_cgroup_subtree();
    if (!d) return tl::unexpected(d.error().context("register step " + key));
    subtree = *d;
  }
  auto cgroup = StepCgroup::open(args.cgroup, subtree);
  if (!cgroup) return tl::unexpected(cgroup.error().context("register step " + key));
  auto populated = cgroup->populated();
  if (!populated) return tl::unexpected(populated.error().context("register step " + key));
  // A pod's cgroup may hold its sandbox already: the step is a container
  // cgroup yet to be made in it, which is empty when made.
  if (*populated && !args.pod_skip_containers) {
    return fail("register step " + key, args.cgroup, EBUSY,
                "the cgroup already has processes; register a step before anything runs in its "
                "cgroup (runner exec does)");
  }
  auto held = std::make_shared<const StepCgroup>(std::move(*cgroup));
  const std::uint64_t cgroup_id = held->id();
  {
    std::lock_guard lock(mutex_);
    auto it = steps_.find(key);
    if (it != steps_.end() && it->second.state != StepState::finished &&
        it->second.state != StepState::failed) {
      return fail("register step", key, EEXIST,
                  "the step is registered and " + std::string(to_string(it->second.state)));
    }
    // Steps that are over need their cgroup no more: close those fds here,
    // so a long-lived daemon holds one per live step, not one per step ever.
    for (auto& [k, other] : steps_) {
      if (other.state == StepState::finished || other.state == StepState::failed)
        other.cgroup.reset();
    }
    if (by_cgroup_.count(cgroup_id)) {
      return fail("register step " + key, args.cgroup, EEXIST,
                  "another step is registered on that cgroup");
    }
    Step s;
    s.args = args;
    s.cgroup_id = cgroup_id;
    s.cgroup = held;
    s.registered_ns = now_ns();
    s.lease_deadline = std::chrono::steady_clock::now() + options_.step_lease;
    if (args.pod_skip_containers) s.pod_cgroup = args.cgroup;
    s.life = ++lives_;
    steps_[key] = std::move(s);
    by_cgroup_[cgroup_id] = key;
  }
  bpf::WatchOptions w = watch_options(args);
  std::uint64_t id = 0;
  auto watched = on_tracer([&](bpf::StepTracer& t) -> Status {
    auto r =
        args.pod_skip_containers
            ? t.watch_pod(args.cgroup, {.skip_children = *args.pod_skip_containers, .container = w})
            : t.watch(args.cgroup, w);
    if (!r) return tl::unexpected(r.error());
    id = *r;
    return {};
  });
  std::lock_guard lock(mutex_);
  Step& s = steps_[key];
  if (!watched) {
    by_cgroup_.erase(s.cgroup_id);
    steps_.erase(key);
    return tl::unexpected(watched.error().context("register step " + key));
  }
  if (id != s.cgroup_id) {
    // The tracer resolved the path to another directory than the one held:
    // the cgroup was replaced meanwhile. Never watch (and later kill) that.
    const std::uint64_t watched_id = id;
    post_tracer([watched_id](bpf::StepTracer& t) { (void)t.unwatch(watched_id); });
    by_cgroup_.erase(s.cgroup_id);
    steps_.erase(key);
    return fail("register step " + key, args.cgroup, ESTALE,
                "the cgroup was replaced while being registered; register again");
  }
  s.watching = true;
  // The tracer thread may already have moved the step on (a fast exec);
  // whatever state it is in now is what gets recorded.
  persist(key, s);
  log::info("step " + key + ": watching " + args.cgroup + " (policy " +
            std::string(policy_name(args)) + ")");
  json answer = step_json(s);
  answer["registration"] = s.life;
  if (!s.pod_cgroup.empty()) answer["pod_cgroup"] = s.pod_cgroup;
  return answer;
}

void StepPolicy::on_event(const bpf::Event& e) {
  if (e.type == bpf::EventType::lost) {
    emit(EventType::events_lost, {{"source", "bpf"}, {"count", e.lost}});
    return;
  }
  std::lock_guard lock(mutex_);
  auto k = by_cgroup_.find(e.cgroup_id);
  if (k == by_cgroup_.end()) return;
  auto it = steps_.find(k->second);
  if (it == steps_.end()) return;
  Step& s = it->second;
  switch (e.type) {
    case bpf::EventType::hold_lost:
      s.error =
          "the step's first exec could not be held (the tracer could not report it: ring buffer "
          "full); the kernel killed it before its first instruction";
      apply(k->second, s, StepInput::hold_lost);
      break;
    case bpf::EventType::hold_broken:
      s.error =
          "the held step was continued from outside (SIGCONT) before its pre-snapshot was "
          "released; the kernel killed it before its first instruction";
      apply(k->second, s, StepInput::hold_broken);
      break;
    case bpf::EventType::exec:
      if (e.held) {
        if (s.state == StepState::preparing)
          s.error =
              "a process of the step exec'd while it waited at runner's gate for its "
              "pre-snapshot; killed";
        s.pid = e.tgid;
        s.exec_mono_ns = e.mono_ns ? e.mono_ns : bpf::monotonic_ns();
        // At runner's gate the pre-snapshot's stamps are taken already;
        // they stay, and this exec's hold is added to them.
        if (s.state != StepState::armed) s.hold = {};
        s.hold.exec = s.exec_mono_ns;
        s.hold.seen = bpf::monotonic_ns();
        s.hold_deadline = std::chrono::steady_clock::now() + options_.hold_timeout;
        apply(k->second, s, StepInput::held_exec);
      } else if (e.main) {
        s.pid = e.tgid;
        if (s.state == StepState::preparing) {
          s.error =
              "a process of the step exec'd while it waited at runner's gate for its "
              "pre-snapshot; killed";
        } else if (s.args.pre_snapshot &&
                   (s.state == StepState::registered || s.state == StepState::armed)) {
          s.error =
              "the step's first exec was not held, so it would run without its pre-snapshot; "
              "killed";
        }
        apply(k->second, s, StepInput::exec);
      }
      break;
    case bpf::EventType::hold_timeout:
      apply(k->second, s, StepInput::hold_timeout);
      break;
    case bpf::EventType::escape: {
      // Its cgroup's kill no longer reaches it: killed on its own. It stays
      // counted, so the step's end still waits for it.
      std::string who =
          e.tgid ? "process " + std::to_string(e.tgid) + (e.comm.empty() ? "" : " (" + e.comm + ")")
                 : "a process";
      s.error = who +
                " left the step's cgroup for another cgroup; a step's processes must stay in "
                "its cgroup, or its snapshots could miss their writes; killed";
      if (e.tgid && e.start_boottime_ns) {
        post_tracer([tgid = e.tgid, boot = e.start_boottime_ns](bpf::StepTracer& t) {
          if (auto r = t.kill_process(tgid, boot); !r) log::warn(r.error().message());
        });
      }
      apply(k->second, s, StepInput::lost_track);
      break;
    }
    case bpf::EventType::untracked:
      s.error = (e.tgid ? "process " + std::to_string(e.tgid) +
                              (e.comm.empty() ? "" : " (" + e.comm + ")")
                        : std::string("a process")) +
                " of the step could not be counted (the tracer's process map: " +
                (e.error ? std::string(std::strerror(e.error)) : std::string("full")) +
                "), so its end would go unseen; killed";
      apply(k->second, s, StepInput::lost_track);
      break;
    case bpf::EventType::container:
      on_container(k->second, s, e);
      break;
    case bpf::EventType::step_end:
      if (!s.exit) s.exit = e.exit;
      if (s.state == StepState::holding) {
        s.ended_while_holding = true;
      } else {
        apply(k->second, s, StepInput::step_end);
      }
      break;
    default:
      break;
  }
}

void StepPolicy::on_container(std::string key, Step& s, const bpf::Event& e) {
  // From here the step is the container's cgroup: its watch is the one to
  // end, its kill the one to make.
  by_cgroup_.erase(s.cgroup_id);
  s.cgroup_id = e.task_cgroup_id;
  by_cgroup_[s.cgroup_id] = key;
  if (e.error != 0) {
    s.error = e.error == ENOSPC
                  ? "the pod's container cgroup could not be watched (the tracer's watch map is "
                    "full): the container runs without its snapshots"
                  : "the pod's container cgroup was removed before it could be watched";
    expire(key, s, "step.container", StepInput::expired);
    return;
  }
  std::string subtree = options_.cgroup_subtree;
  if (subtree.empty()) subtree = default_step_cgroup_subtree().value_or("");
  auto cgroup = StepCgroup::open(e.filename, subtree);
  if (!cgroup || cgroup->id() != s.cgroup_id) {
    s.error = "the pod's container cgroup " + e.filename + " could not be held: " +
              (cgroup ? std::string("it was replaced") : cgroup.error().message());
    expire(key, s, "step.container", StepInput::expired);
    return;
  }
  s.args.cgroup = e.filename;
  s.cgroup = std::make_shared<const StepCgroup>(std::move(*cgroup));
  persist(key, s);
  log::info("step " + key + ": its container is " + e.filename + " in pod " + s.pod_cgroup);
}

Status StepPolicy::kill_step_cgroup(const Step& s) {
  if (!s.cgroup) return fail("kill cgroup", s.args.cgroup, EBADF, "the step holds no cgroup");
  return s.cgroup->kill(s.cgroup_id);
}

void StepPolicy::apply(const std::string& key, Step& s, StepInput input) {
  // One transaction for the step's new row and the events of this change.
  // A failed begin is logged and the change still happens: a step must be
  // killed or released whatever the database says.
  auto sp = Savepoint::begin(catalog_.db());
  if (!sp) log::error("step " + key + ": " + sp.error().message());
  StepPolicyFlags flags{s.args.pre_snapshot, s.args.post_snapshot};
  StepState before = s.state;
  StepTransition t = step_transition(s.state, input, flags);
  s.state = t.next;
  if (before == StepState::registered && t.next == StepState::failed && s.error.empty()) {
    s.error =
        "the step's cgroup emptied before any exec: whoever was to start it (runner) failed "
        "during setup, so nothing ran and nothing was snapshotted";
  }
  if (before != t.next) {
    log::debug("step " + key + ": " + std::string(to_string(before)) + " -> " +
               std::string(to_string(t.next)));
  }
  std::uint64_t cgroup_id = s.cgroup_id;
  switch (t.action) {
    case StepAction::none:
      break;
    case StepAction::take_pre:
      post_work([this, key] { take_snapshots(key, Phase::pre); });
      break;
    case StepAction::release:
    case StepAction::mark_started: {
      s.started_ns = now_ns();
      std::optional<HoldParts> hold;
      if (t.action == StepAction::release && s.exec_mono_ns != 0) {
        s.hold.release = bpf::monotonic_ns();
        hold = hold_parts(s.hold);
        s.held_ns = hold->held_ns;
      }
      json data = step_ref(s.args);
      data["held_ns"] = s.held_ns;
      if (hold) data["hold"] = to_json(*hold);
      data["pid"] = s.pid;
      data["cgroup"] = s.args.cgroup;
      data["pre_snapshots"] = s.pre_snapshots;
      emit(EventType::step_started, data);
      if (t.action == StepAction::release) {
        post_tracer([cgroup_id, key, exec = s.exec_mono_ns](bpf::StepTracer& tr) {
          if (auto r = tr.release(cgroup_id); !r) {
            log::warn("step " + key + ": release: " + r.error().message());
          } else if (exec != 0) {
            // held_ns ends where the release was decided; this is when the
            // tracer thread sent it (scripts/bench-hold reads it).
            log::info("step " + key + ": released " +
                      std::to_string((bpf::monotonic_ns() - exec) / 1000) + " us after its exec");
          }
        });
      }
      log::info("step " + key + ": started (held " + std::to_string(s.held_ns / 1000000) + " ms)");
      if (s.ended_while_holding) {
        s.ended_while_holding = false;
        apply(key, s, StepInput::step_end);
      }
      break;
    }
    case StepAction::kill: {
      if (s.error.empty()) {
        s.error = input == StepInput::hold_timeout
                      ? "the tracer's hold timed out before the pre-snapshot was taken"
                      : "pre-snapshot failed";
      }
      auto k = kill_step_cgroup(s);
      log::error("step " + key + ": " + s.error + "; killing its cgroup" +
                 (k ? "" : " failed: " + k.error().message()));
      json data = step_ref(s.args);
      // step.hold: the hold itself failed (lost, broken, never made, or
      // abandoned at stop); step.pre_snapshot: the snapshot failed or was late.
      bool hold = input == StepInput::hold_lost || input == StepInput::hold_broken ||
                  input == StepInput::exec || input == StepInput::abandon;
      data["op"] = input == StepInput::lost_track ? "step.track"
                   : hold                         ? "step.hold"
                                                  : "step.pre_snapshot";
      data["message"] = s.error;
      data["cgroup"] = s.args.cgroup;
      data["killed"] = static_cast<bool>(k);
      emit(EventType::error, data);
      if (s.ended_while_holding) {
        s.ended_while_holding = false;
        apply(key, s, StepInput::step_end);
      }
      break;
    }
    case StepAction::take_post:
      post_work([this, key] { take_snapshots(key, Phase::post); });
      break;
    case StepAction::finish:
      finish_step(key, s);
      break;
  }
  if (before != t.next || t.action != StepAction::none) persist(key, s);
  if (sp) {
    if (auto c = sp->commit(); !c) log::error("step " + key + ": " + c.error().message());
  }
  if (before != t.next) state_cv_.notify_all();
}

void StepPolicy::take_snapshots(const std::string& key, Phase phase) {
  std::vector<std::string> volumes;
  StepInfo info;
  Labels labels;
  {
    std::lock_guard lock(mutex_);
    auto it = steps_.find(key);
    if (it == steps_.end()) return;
    const Step& s = it->second;
    // Given up on while queued (the hold timed out): a pre-snapshot now
    // would be of a step that was killed, not of its starting state.
    if (phase == Phase::pre && s.state != StepState::holding && s.state != StepState::preparing)
      return;
    volumes = s.args.volumes;
    info = StepInfo{s.args.pipeline, s.args.run,
                    s.args.step,     phase,
                    s.args.command,  phase == Phase::post ? exit_status_of(s.exit) : std::nullopt};
    labels = s.args.labels;
  }
  const std::uint64_t started = bpf::monotonic_ns();
  json extra = {{"step",
                 {{"pipeline", info.pipeline},
                  {"run", info.run},
                  {"step", info.step},
                  {"phase", std::string(to_string(phase))},
                  {"command", info.command}}}};
  if (info.exit_status) extra["step"]["exit_status"] = *info.exit_status;
  std::string not_exact;
  if (phase == Phase::post) {
    // The tracer ended the step on cgroup.events populated 0: its mount
    // namespace is gone. Loop devices are not: detach what it left.
    std::vector<SettleTarget> targets;
    for (const auto& v : volumes) {
      auto d = volumes_.find(v);
      if (d && !d->dm_name.empty()) targets.push_back({d->name, "/dev/mapper/" + d->dm_name});
    }
    SettleReport settled = settle_before_post_snapshot(targets);
    for (const auto& l : settled.detached)
      log::info("step " + key + ": detached loop device " + l + ", left attached by the step");
    if (!settled.detached.empty()) extra["step"]["detached_loop_devices"] = settled.detached;
    if (!settled.not_exact.empty()) {
      not_exact = join(settled.not_exact, "; ");
      log::warn("step " + key + ": post-snapshot not exact: " + not_exact);
      labels[kExactLabel] = "false";
      labels[kNotExactLabel] = not_exact;
      extra["step"]["exact"] = false;
      extra["step"]["not_exact_reason"] = not_exact;
    }
  }
  auto group = volumes_.snapshot_group(volumes, info, labels, extra);
  const std::uint64_t made = bpf::monotonic_ns();
  std::unique_lock lock(mutex_);
  // What the group left for after the release (mapped bytes, the pool's
  // space), run once the step is released and this lock is given up.
  struct Settle {
    Volumes& volumes;
    const Result<GroupSnapshot>& group;
    std::unique_lock<std::mutex>& lock;
    ~Settle() {
      if (!group) return;
      if (lock.owns_lock()) lock.unlock();
      volumes.settle_group(*group);
    }
  } settle{volumes_, group, lock};
  auto it = steps_.find(key);
  if (it == steps_.end()) {
    // The step ended meanwhile and left memory (killed while this group
    // waited for the pool): the snapshots exist, so its row names them.
    if (group) record_late_snapshots(info, phase, *group);
    return;
  }
  Step& s = it->second;
  if (phase == Phase::post) s.not_exact = not_exact;
  if (!group) {
    s.error = std::string(to_string(phase)) + "-snapshot failed: " + group.error().message();
    log::error("step " + key + ": " + s.error);
    if (phase == Phase::post) {
      json data = step_ref(s.args);
      data["op"] = "step.post_snapshot";
      data["message"] = s.error;
      if (!group.error().kind.empty()) data["kind"] = group.error().kind;
      emit(EventType::error, data);
    }
    apply(key, s, phase == Phase::pre ? StepInput::pre_failed : StepInput::post_failed);
    if (phase == Phase::post) apply(key, s, StepInput::step_end);  // failed -> finish
    return;
  }
  if (phase == Phase::pre) {
    s.hold.snapshot_start = started;
    s.hold.snapshot_end = made;
    s.hold.flush = group->flush;
    s.hold.pause = group->pause;
    const dm::SnapshotTimes& k = group->kernel;
    s.hold.group = GroupParts{.lock_wait_ns = group->lock_wait.count(),
                              .lookup_ns = group->lookup.count(),
                              .status_ns = k.status.count(),
                              .txn_ns = k.txn_message.count(),
                              .intent_ns = k.before.count(),
                              .suspend_ns = k.suspend.count(),
                              .create_snap_ns = k.create_snap.count(),
                              .resume_ns = k.resume.count(),
                              .result_ns = group->results.count()};
  }
  auto& names = phase == Phase::pre ? s.pre_snapshots : s.post_snapshots;
  for (const auto& d : group->snapshots) names.push_back(d.name);
  // One commit for the step's snapshot names, its new state and the event
  // that says so (step.started, or step.finished), where there were two:
  // the held step waits for this commit and no more. The names are
  // recorded even when the step was given up on meanwhile (a hold timeout
  // while this group waited for the pool): the snapshots exist, and the
  // transition below would then change nothing and write nothing.
  auto sp = Savepoint::begin(catalog_.db());
  if (!sp) log::error("step " + key + ": " + sp.error().message());
  persist(key, s);
  log::info("step " + key + ": " + std::string(to_string(phase)) + "-snapshots taken, flush " +
            std::to_string(group->flush.count() / 1000) + " us, pause " +
            std::to_string(group->pause.count() / 1000) + " us");
  if (phase == Phase::pre) {
    apply(key, s, StepInput::pre_done);
  } else {
    apply(key, s, StepInput::post_done);
    finish_step(key, s);
  }
  if (sp) {
    if (auto c = sp->commit(); !c) log::error("step " + key + ": " + c.error().message());
  }
  // step.ready answers from here on (it waits for this lock).
  if (phase == Phase::pre && s.state == StepState::armed) s.hold.armed = bpf::monotonic_ns();
}

void StepPolicy::finish_step(const std::string& key, Step& s) {
  auto sp = Savepoint::begin(catalog_.db());
  if (!sp) log::error("step " + key + ": " + sp.error().message());
  s.finished_ns = now_ns();
  json data = step_ref(s.args);
  auto status = exit_status_of(s.exit);
  data["exit_status"] = status ? json(*status) : json(nullptr);
  if (s.exit && s.exit->signal) data["signal"] = *s.exit->signal;
  data["state"] = std::string(to_string(s.state));
  data["pre_snapshots"] = s.pre_snapshots;
  data["post_snapshots"] = s.post_snapshots;
  if (!s.post_snapshots.empty()) {
    data["exact"] = s.not_exact.empty();
    if (!s.not_exact.empty()) data["not_exact_reason"] = s.not_exact;
  }
  if (s.started_ns) data["duration_ns"] = s.finished_ns - s.started_ns;
  if (!s.error.empty()) data["error"] = s.error;
  persist(key, s);
  emit(EventType::step_finished, data);
  if (sp) {
    if (auto c = sp->commit(); !c) log::error("step " + key + ": " + c.error().message());
  }
  if (s.watching) {
    s.watching = false;
    std::uint64_t id = s.cgroup_id;
    post_tracer([id](bpf::StepTracer& tr) { (void)tr.unwatch(id); });
  }
  by_cgroup_.erase(s.cgroup_id);
  log::info("step " + key + ": " + std::string(to_string(s.state)) + ", exit status " +
            (status ? std::to_string(*status) : std::string("unknown")));
  forget_later(key, s);
}

void StepPolicy::forget_later(const std::string& key, const Step& s) {
  // Over steps leave memory; the catalog has their last record, which
  // status() and run() read. Later, on the tracer thread: callers up the
  // stack still hold references to this step.
  post_tracer([this, key, life = s.life](bpf::StepTracer&) {
    std::lock_guard lock(mutex_);
    auto it = steps_.find(key);
    if (it == steps_.end() || it->second.life != life) return;
    if (it->second.state != StepState::finished && it->second.state != StepState::failed) return;
    steps_.erase(it);
  });
}

void StepPolicy::record_late_snapshots(const StepInfo& info, Phase phase,
                                       const GroupSnapshot& group) {
  auto rec = catalog_.find_step(info.pipeline, info.run, info.step);
  if (!rec || !*rec) return;
  StepRecord r = **rec;
  auto& names = phase == Phase::pre ? r.pre_snapshots : r.post_snapshots;
  for (const auto& d : group.snapshots) names.push_back(d.name);
  if (auto w = catalog_.save_step(r); !w) {
    log::error("step " + step_key(info.pipeline, info.run, info.step) + ": " + w.error().message());
  }
}

json StepPolicy::step_json(const Step& s) const { return step_record_json(record_of(s)); }

Result<json> StepPolicy::status(const std::string& pipeline, const std::string& run,
                                const std::string& step) {
  std::optional<json> live;
  {
    std::lock_guard lock(mutex_);
    auto it = steps_.find(step_key(pipeline, run, step));
    if (it != steps_.end()) live = step_json(it->second);
  }
  return records_.status(pipeline, run, step, live);
}

Result<json> StepPolicy::run(const std::string& pipeline, const std::string& run) {
  std::map<std::string, json> live;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [key, s] : steps_) {
      if (s.args.pipeline == pipeline && s.args.run == run) live[s.args.step] = step_json(s);
    }
  }
  return records_.run(pipeline, run, live);
}

}  // namespace stepsnap::agent
