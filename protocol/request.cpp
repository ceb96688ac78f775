#include "protocol/request.h"

#include <set>

#include "common/enum_names.h"

namespace stepsnap::protocol {

namespace {

using json = nlohmann::json;

constexpr std::pair<Op, std::string_view> kOps[] = {
    {Op::volume_create, "volume.create"},
    {Op::volume_list, "volume.list"},
    {Op::volume_delete, "volume.delete"},
    {Op::snapshot_create, "snapshot.create"},
    {Op::snapshot_list, "snapshot.list"},
    {Op::snapshot_show, "snapshot.show"},
    {Op::snapshot_delete, "snapshot.delete"},
    {Op::snapshot_label, "snapshot.label"},
    {Op::clone_create, "clone.create"},
    {Op::restore, "restore"},
    {Op::step_register, "step.register"},
    {Op::step_unregister, "step.unregister"},
    {Op::step_ready, "step.ready"},
    {Op::step_status, "step.status"},
    {Op::run_show, "run.show"},
    {Op::run_clone, "run.clone"},
    {Op::run_create, "run.create"},
    {Op::events_subscribe, "events.subscribe"},
    {Op::snapshot_send, "snapshot.send"},
    {Op::snapshot_receive, "snapshot.receive"},
    {Op::retention_set, "retention.set"},
    {Op::retention_show, "retention.show"},
    {Op::gc, "gc"},
};

std::string all_ops() {
  std::string out;
  for (const auto& [op, name] : kOps) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

// With its article: "got an object", "got a string".
std::string type_name(const json& v) {
  if (v.is_number_unsigned()) return "an unsigned integer";
  if (v.is_number_integer()) return "a negative integer";
  if (v.is_number_float()) return "a number with a fraction or exponent";
  if (v.is_object() || v.is_array()) return std::string("an ") + v.type_name();
  return std::string("a ") + v.type_name();
}

// Quoted for a message, cut short so a 60 KiB value does not make a 60 KiB
// error line.
std::string shown(std::string_view s) {
  constexpr std::size_t kMax = 40;
  json j = std::string(s.substr(0, kMax)) + (s.size() > kMax ? "..." : "");
  return j.dump(-1, ' ', true, json::error_handler_t::replace);
}

// Reads the fields of one JSON object, remembering which were used so that
// finish() can reject any other. The first problem wins; later reads are
// no-ops, so parse functions read straight through without checks.
class Fields {
 public:
  Fields(const json& object, std::string prefix) : obj_(object), prefix_(std::move(prefix)) {}

  bool failed() const { return error_.has_value(); }
  RequestError take_error() { return std::move(*error_); }

  void fail(std::string_view code, const std::string& field, const std::string& what) {
    if (!error_) error_ = RequestError{std::string(code), prefix_ + field + ": " + what, nullptr};
  }

  const json* get(const std::string& field, bool required) {
    allowed_.insert(field);
    if (failed()) return nullptr;
    auto it = obj_.find(field);
    if (it == obj_.end()) {
      if (required) fail(code::missing_field, field, "missing; it is required");
      return nullptr;
    }
    return &*it;
  }

  std::optional<std::string> string(const std::string& field, bool required, std::size_t max_len) {
    const json* v = get(field, required);
    if (!v) return std::nullopt;
    if (!v->is_string()) {
      fail(code::wrong_type, field, "expected a string, got " + type_name(*v));
      return std::nullopt;
    }
    const auto& s = v->get_ref<const std::string&>();
    if (s.size() > max_len) {
      fail(code::invalid_value, field,
           "is " + std::to_string(s.size()) + " bytes; at most " + std::to_string(max_len));
      return std::nullopt;
    }
    if (s.find('\0') != std::string::npos) {
      fail(code::invalid_value, field, "contains a NUL byte");
      return std::nullopt;
    }
    return s;
  }

  std::optional<std::string> name(const std::string& field, bool required) {
    // Not through string(): an over-long name or one with a NUL byte must
    // get the name rule in its message, not a generic length error.
    const json* v = get(field, required);
    if (!v) return std::nullopt;
    if (!v->is_string()) {
      fail(code::wrong_type, field, "expected a string, got " + type_name(*v));
      return std::nullopt;
    }
    const std::string* s = &v->get_ref<const std::string&>();
    if (auto problem = name_problem(*s)) {
      fail(code::invalid_value, field, shown(*s) + " " + *problem + "; " + std::string(kNameRule));
      return std::nullopt;
    }
    return *s;
  }

  std::string required_name(const std::string& field) { return name(field, true).value_or(""); }
  std::optional<std::string> optional_name(const std::string& field) { return name(field, false); }

  std::optional<std::uint64_t> uint64(const std::string& field, bool required) {
    const json* v = get(field, required);
    if (!v) return std::nullopt;
    if (!v->is_number_unsigned()) {
      fail(code::wrong_type, field, "expected an unsigned integer, got " + type_name(*v));
      return std::nullopt;
    }
    return v->get<std::uint64_t>();
  }

  std::optional<bool> boolean(const std::string& field) {
    const json* v = get(field, false);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) {
      fail(code::wrong_type, field, "expected true or false, got " + type_name(*v));
      return std::nullopt;
    }
    return v->get<bool>();
  }

  Labels labels(const std::string& field) {
    Labels out;
    const json* v = get(field, false);
    if (!v) return out;
    if (!v->is_object()) {
      fail(code::wrong_type, field, "expected an object of string values, got " + type_name(*v));
      return out;
    }
    if (v->size() > kMaxLabels) {
      fail(code::invalid_value, field,
           "has " + std::to_string(v->size()) + " labels; at most " + std::to_string(kMaxLabels));
      return out;
    }
    for (auto it = v->begin(); it != v->end(); ++it) {
      std::string where = field + "." + it.key();
      if (auto problem = name_problem(it.key())) {
        fail(code::invalid_value, field,
             "key " + shown(it.key()) + " " + *problem + "; " + std::string(kNameRule));
        return out;
      }
      if (!it.value().is_string()) {
        fail(code::wrong_type, where, "expected a string, got " + type_name(it.value()));
        return out;
      }
      const auto& s = it.value().get_ref<const std::string&>();
      if (s.size() > kMaxLabelValueLength) {
        fail(code::invalid_value, where,
             "is " + std::to_string(s.size()) + " bytes; at most " +
                 std::to_string(kMaxLabelValueLength));
        return out;
      }
      out.emplace(it.key(), s);
    }
    return out;
  }

  // Absent and not required: an empty list.
  std::vector<std::string> name_list(const std::string& field, std::size_t max_items,
                                     bool required = true) {
    std::vector<std::string> out;
    const json* v = get(field, required);
    if (!v) return out;
    if (!v->is_array()) {
      fail(code::wrong_type, field, "expected an array of names, got " + type_name(*v));
      return out;
    }
    if (v->empty() || v->size() > max_items) {
      fail(code::invalid_value, field,
           "has " + std::to_string(v->size()) + " entries; give 1 to " + std::to_string(max_items));
      return out;
    }
    std::set<std::string> seen;
    for (std::size_t i = 0; i < v->size(); ++i) {
      std::string where = field + "[" + std::to_string(i) + "]";
      const json& item = (*v)[i];
      if (!item.is_string()) {
        fail(code::wrong_type, where, "expected a string, got " + type_name(item));
        return out;
      }
      const auto& s = item.get_ref<const std::string&>();
      if (auto problem = name_problem(s)) {
        fail(code::invalid_value, where, shown(s) + " " + *problem + "; " + std::string(kNameRule));
        return out;
      }
      if (!seen.insert(s).second) {
        fail(code::invalid_value, where, shown(s) + " is listed twice; list each once");
        return out;
      }
      out.push_back(s);
    }
    return out;
  }

  // Takes the first problem of a nested object's Fields as this one's.
  void adopt(Fields& inner) {
    if (inner.failed() && !failed()) error_ = inner.take_error();
  }

  // Rejects every field nobody asked for: a misspelt optional field must not
  // be silently ignored.
  void finish() {
    if (failed()) return;
    for (auto it = obj_.begin(); it != obj_.end(); ++it) {
      if (!allowed_.count(it.key())) {
        std::string allowed;
        for (const auto& a : allowed_) allowed += (allowed.empty() ? "" : ", ") + a;
        fail(code::unknown_field, it.key(),
             "unknown field; allowed here: " + (allowed.empty() ? "none" : allowed));
        return;
      }
    }
  }

 private:
  const json& obj_;
  std::string prefix_;
  std::set<std::string> allowed_;
  std::optional<RequestError> error_;
};

// run.create's "plan" (RunPlanArgs): steps in execution order, so every
// step's `after` names steps listed before it.
std::optional<RunPlanArgs> run_plan(Fields& f) {
  const json* v = f.get("plan", false);
  if (!v) return std::nullopt;
  if (!v->is_object()) {
    f.fail(code::wrong_type, "plan", "expected an object, got " + type_name(*v));
    return std::nullopt;
  }
  Fields p(*v, "plan.");
  RunPlanArgs plan;
  std::set<std::string> listed;
  const json* steps = p.get("steps", true);
  if (steps && !steps->is_array()) {
    p.fail(code::wrong_type, "steps",
           "expected an array of {step, after}, got " + type_name(*steps));
  } else if (steps && (steps->empty() || steps->size() > kMaxPlanSteps)) {
    p.fail(code::invalid_value, "steps",
           "has " + std::to_string(steps->size()) + " entries; give 1 to " +
               std::to_string(kMaxPlanSteps));
  } else if (steps) {
    for (std::size_t i = 0; i < steps->size() && !p.failed(); ++i) {
      std::string where = "steps[" + std::to_string(i) + "]";
      const json& item = (*steps)[i];
      if (!item.is_object()) {
        p.fail(code::wrong_type, where, "expected an object {step, after}, got " + type_name(item));
        break;
      }
      Fields one(item, "plan." + where + ".");
      PlannedStepArgs step{one.required_name("step"), one.name_list("after", kMaxPlanSteps, false)};
      one.finish();
      p.adopt(one);
      if (p.failed()) break;
      for (const auto& a : step.after) {
        if (!listed.count(a)) {
          p.fail(code::invalid_value, where + ".after",
                 shown(a) + " is not a step listed before it; list steps in execution order");
          break;
        }
      }
      if (!listed.insert(step.step).second)
        p.fail(code::invalid_value, where + ".step", shown(step.step) + " is listed twice");
      plan.steps.push_back(std::move(step));
    }
  }
  plan.restored = p.name_list("restored", kMaxPlanSteps, false);
  for (const auto& r : plan.restored) {
    if (!listed.count(r)) {
      p.fail(code::invalid_value, "restored", shown(r) + " is not one of the plan's steps");
      break;
    }
  }
  plan.restored_from = p.optional_name("restored_from");
  if (!plan.restored.empty() && !plan.restored_from)
    p.fail(code::missing_field, "restored_from",
           "missing; name the run the restored steps come from");
  p.finish();
  f.adopt(p);
  return plan;
}

std::string cgroup_path(Fields& f) {
  auto path = f.string("cgroup", true, kMaxPathLength);
  if (!path) return {};
  if (path->empty() || (*path)[0] != '/') {
    f.fail(code::invalid_value, "cgroup",
           shown(*path) +
               " is not absolute; give the cgroup's full path, e.g. "
               "/sys/fs/cgroup/stepsnap/run-1/train");
    return {};
  }
  // Refuse ".." and "." components: the agent must never be talked into
  // watching (or killing) a cgroup outside the one named.
  std::size_t start = 1;
  while (start <= path->size()) {
    std::size_t end = path->find('/', start);
    if (end == std::string::npos) end = path->size();
    std::string_view part(path->data() + start, end - start);
    if (part == "." || part == "..") {
      f.fail(code::invalid_value, "cgroup",
             shown(*path) + " contains a \"" + std::string(part) +
                 "\" component; give the resolved path");
      return {};
    }
    start = end + 1;
  }
  return *path;
}

Page page(Fields& f) {
  Page p;
  p.after = f.optional_name("after");
  if (auto limit = f.uint64("limit", false)) {
    if (*limit == 0 || *limit > kMaxPageSize) {
      f.fail(code::invalid_value, "limit",
             std::to_string(*limit) + " is not between 1 and " + std::to_string(kMaxPageSize) +
                 "; ask for more pages with \"after\"");
    } else {
      p.limit = *limit;
    }
  }
  return p;
}

RequestArgs parse_args(Op op, Fields& f) {
  switch (op) {
    case Op::volume_create: {
      VolumeCreateArgs a;
      a.pool = f.optional_name("pool");
      a.name = f.required_name("name");
      a.size_bytes = f.uint64("size_bytes", true).value_or(0);
      if (!f.failed() && (a.size_bytes == 0 || a.size_bytes % 512 != 0)) {
        f.fail(code::invalid_value, "size_bytes",
               std::to_string(a.size_bytes) + " is not a positive multiple of 512 (one sector)");
      }
      if (!f.failed() && a.size_bytes > kMaxVolumeBytes) {
        f.fail(code::invalid_value, "size_bytes",
               std::to_string(a.size_bytes) + " is more than 1 PiB; check the number of digits");
      }
      if (auto fs = f.string("filesystem", false, 16); fs && *fs != "ext4" && *fs != "xfs") {
        f.fail(code::invalid_value, "filesystem", shown(*fs) + " is not one of ext4, xfs");
      } else {
        a.filesystem = fs;
      }
      a.labels = f.labels("labels");
      return a;
    }
    case Op::volume_list:
      return VolumeListArgs{f.optional_name("pool"), page(f)};
    case Op::volume_delete: {
      VolumeDeleteArgs a;
      a.pool = f.optional_name("pool");
      a.name = f.required_name("name");
      return a;
    }
    case Op::snapshot_create: {
      SnapshotCreateArgs a;
      a.pool = f.optional_name("pool");
      a.volume = f.required_name("volume");
      a.name = f.optional_name("name");
      a.labels = f.labels("labels");
      a.pipeline = f.optional_name("pipeline");
      a.run = f.optional_name("run");
      if (!f.failed() && a.pipeline.has_value() != a.run.has_value()) {
        f.fail(code::invalid_value, a.pipeline ? "run" : "pipeline",
               "missing; an initial snapshot names both its pipeline and its run");
      }
      return a;
    }
    case Op::snapshot_list: {
      SnapshotListArgs a;
      a.pool = f.optional_name("pool");
      a.volume = f.optional_name("volume");
      a.pipeline = f.optional_name("pipeline");
      a.run = f.optional_name("run");
      a.step = f.optional_name("step");
      a.page = page(f);
      return a;
    }
    case Op::snapshot_show: {
      SnapshotShowArgs a;
      a.pool = f.optional_name("pool");
      a.name = f.required_name("name");
      return a;
    }
    case Op::snapshot_delete: {
      SnapshotDeleteArgs a;
      a.pool = f.optional_name("pool");
      a.name = f.required_name("name");
      return a;
    }
    case Op::snapshot_label: {
      SnapshotLabelArgs a;
      a.pool = f.optional_name("pool");
      a.name = f.required_name("name");
      a.labels = f.labels("labels");
      if (!f.failed() && a.labels.empty())
        f.fail(code::invalid_value, "labels", "missing or empty; give at least one KEY: VALUE");
      return a;
    }
    case Op::clone_create: {
      CloneCreateArgs a;
      a.pool = f.optional_name("pool");
      a.snapshot = f.required_name("snapshot");
      a.name = f.required_name("name");
      a.labels = f.labels("labels");
      return a;
    }
    case Op::restore: {
      RestoreArgs a;
      a.pool = f.optional_name("pool");
      a.snapshot = f.required_name("snapshot");
      a.name = f.required_name("name");
      a.labels = f.labels("labels");
      return a;
    }
    case Op::step_register: {
      StepRegisterArgs a;
      a.pipeline = f.required_name("pipeline");
      a.run = f.required_name("run");
      a.step = f.required_name("step");
      a.cgroup = cgroup_path(f);
      a.volumes = f.name_list("volumes", kMaxStepVolumes);
      if (auto p = f.string("policy", false, 16)) {
        if (*p == "pre")
          a.policy = SnapshotPolicy::pre;
        else if (*p == "post")
          a.policy = SnapshotPolicy::post;
        else if (*p == "both")
          a.policy = SnapshotPolicy::both;
        else if (*p == "none")
          a.policy = SnapshotPolicy::none;
        else
          f.fail(code::invalid_value, "policy", shown(*p) + " is not one of pre, post, both, none");
      }
      a.command = f.string("command", false, kMaxCommandLength).value_or("");
      a.labels = f.labels("labels");
      if (auto l = f.string("lease", false, 16)) {
        if (*l == "time")
          a.lease_connection = false;
        else if (*l != "connection")
          f.fail(code::invalid_value, "lease", shown(*l) + " is not one of connection, time");
      }
      if (auto n = f.uint64("pod_skip_containers", false)) {
        if (*n > kMaxPodSkipContainers)
          f.fail(code::invalid_value, "pod_skip_containers",
                 std::to_string(*n) + " is more than " + std::to_string(kMaxPodSkipContainers) +
                     " containers before the step's");
        a.pod_skip_containers = static_cast<std::uint32_t>(*n);
      }
      return a;
    }
    case Op::step_unregister: {
      StepUnregisterArgs a;
      a.pipeline = f.required_name("pipeline");
      a.run = f.required_name("run");
      a.step = f.required_name("step");
      return a;
    }
    case Op::step_ready: {
      StepReadyArgs a;
      a.pipeline = f.required_name("pipeline");
      a.run = f.required_name("run");
      a.step = f.required_name("step");
      a.registration = f.uint64("registration", true).value_or(0);
      return a;
    }
    case Op::step_status: {
      StepStatusArgs a;
      a.pipeline = f.required_name("pipeline");
      a.run = f.required_name("run");
      a.step = f.required_name("step");
      return a;
    }
    case Op::run_show: {
      RunShowArgs a;
      a.pipeline = f.required_name("pipeline");
      a.run = f.required_name("run");
      return a;
    }
    case Op::snapshot_send: {
      SnapshotSendArgs a;
      a.pool = f.optional_name("pool");
      a.name = f.required_name("name");
      a.base = f.optional_name("base");
      return a;
    }
    case Op::snapshot_receive: {
      SnapshotReceiveArgs a;
      a.pool = f.optional_name("pool");
      a.name = f.optional_name("name");
      return a;
    }
    case Op::run_clone: {
      RunCloneArgs a;
      a.pool = f.optional_name("pool");
      a.pipeline = f.required_name("pipeline");
      a.run = f.required_name("run");
      a.volume = f.required_name("volume");
      a.snapshot = f.optional_name("snapshot");
      return a;
    }
    case Op::run_create: {
      RunCreateArgs a;
      a.pool = f.optional_name("pool");
      a.pipeline = f.required_name("pipeline");
      a.run = f.optional_name("run");
      a.volumes = f.name_list("volumes", kMaxStepVolumes);
      a.sources = f.name_list("sources", kMaxStepVolumes, false);
      if (!f.failed() && !a.sources.empty() && a.sources.size() != a.volumes.size())
        f.fail(code::invalid_value, "sources",
               "give one snapshot per volume, in the order of volumes, or none");
      a.plan = run_plan(f);
      return a;
    }
    case Op::retention_set: {
      RetentionSetArgs a;
      a.pipeline = f.optional_name("pipeline");
      a.keep_runs = f.uint64("keep_runs", false);
      a.keep_failed_runs = f.uint64("keep_failed_runs", false).value_or(0);
      a.max_age_seconds = f.uint64("max_age_seconds", false);
      a.keep = f.name_list("keep", kMaxLabels, false);
      a.clear = f.boolean("clear").value_or(false);
      if (f.failed()) return a;
      if (a.keep_runs && *a.keep_runs == 0)
        f.fail(code::invalid_value, "keep_runs",
               "0 would delete the run that just finished; give 1 or more, or use "
               "max_age_seconds");
      else if (a.max_age_seconds && *a.max_age_seconds == 0)
        f.fail(code::invalid_value, "max_age_seconds", "0 is no age; give 1 or more seconds");
      else if (a.clear &&
               (a.keep_runs || a.max_age_seconds || a.keep_failed_runs || !a.keep.empty()))
        f.fail(code::invalid_value, "clear",
               "drops the pipeline's rule; give it alone, or the new limits without it");
      return a;
    }
    case Op::retention_show:
      return RetentionShowArgs{};
    case Op::gc: {
      GcArgs a;
      a.dry_run = f.boolean("dry_run").value_or(false);
      a.pipeline = f.optional_name("pipeline");
      return a;
    }
    case Op::events_subscribe: {
      EventsSubscribeArgs a;
      a.since = f.uint64("since", false);
      a.follow = f.boolean("follow").value_or(true);
      a.limit = f.uint64("limit", false);
      if (!f.failed() && a.limit && *a.limit == 0) {
        f.fail(code::invalid_value, "limit",
               "0 events is no page; give 1 or more, or leave it out");
      }
      return a;
    }
  }
  return VolumeListArgs{};
}

// nlohmann's parser recurses per nesting level; bound the depth before it
// runs so a line of 60000 '[' cannot exhaust the stack.
bool too_deep(std::string_view text) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

tl::unexpected<RequestError> reject(std::string_view code, std::string message, json id = nullptr) {
  return tl::unexpected(RequestError{std::string(code), std::move(message), std::move(id)});
}

}  // namespace

std::string_view to_string(Op op) { return name_of(op, kOps); }

std::optional<Op> parse_op(std::string_view text) { return parse_enum(text, kOps); }

std::string_view to_string(SnapshotPolicy policy) {
  switch (policy) {
    case SnapshotPolicy::pre:
      return "pre";
    case SnapshotPolicy::post:
      return "post";
    case SnapshotPolicy::both:
      return "both";
    case SnapshotPolicy::none:
      return "none";
  }
  return "none";
}

tl::expected<Request, RequestError> parse_request(std::string_view line) {
  if (line.size() > kMaxRequestBytes) {
    return reject(code::too_large, "request is " + std::to_string(line.size()) +
                                       " bytes; the limit is " + std::to_string(kMaxRequestBytes) +
                                       "; send fewer labels or shorter values");
  }
  if (too_deep(line)) {
    return reject(code::bad_json, "request nests deeper than " + std::to_string(kMaxJsonDepth) +
                                      " levels; flatten it");
  }
  // Duplicate keys are refused: with "last one wins" a request could say one
  // thing to a logging proxy and another to the agent.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto callback = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == json::parse_event_t::key && !keys.empty() && parsed.is_string()) {
      if (!keys.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  json doc = json::parse(line.begin(), line.end(), callback, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return reject(code::bad_json,
                  "request is not valid JSON (or not UTF-8); send one JSON object per line");
  }
  if (!doc.is_object()) {
    return reject(code::bad_request, "request must be a JSON object, got " + type_name(doc));
  }
  if (!duplicate.empty()) {
    return reject(code::bad_request, shown(duplicate) + ": key given twice; give each key once");
  }

  // The id first, so every later error can be matched to its request.
  json id = nullptr;
  if (auto it = doc.find("id"); it != doc.end()) {
    if (it->is_number_unsigned() ||
        (it->is_string() && it->get_ref<const std::string&>().size() <= kMaxIdLength)) {
      id = *it;
    } else {
      return reject(code::wrong_type, "id: expected an unsigned integer or a string of at most " +
                                          std::to_string(kMaxIdLength) + " bytes, got " +
                                          type_name(*it));
    }
  } else {
    return reject(code::missing_field,
                  "id: missing; give each request an id (string or integer) to match its answer");
  }

  Fields top(doc, "");
  top.get("id", true);  // read above; marks it as allowed
  auto v = top.uint64("v", true);
  auto op_name = top.string("op", true, 64);
  const json* args = top.get("args", false);
  top.finish();
  if (top.failed()) {
    auto e = top.take_error();
    e.id = id;
    return tl::unexpected(std::move(e));
  }
  if (*v != static_cast<std::uint64_t>(kApiVersion)) {
    return reject(code::unsupported_version,
                  "v: " + std::to_string(*v) + " is not supported; this agent speaks v" +
                      std::to_string(kApiVersion),
                  id);
  }
  auto op = parse_op(*op_name);
  if (!op) {
    return reject(code::unknown_op,
                  "op: " + shown(*op_name) + " is unknown; known ops: " + all_ops(), id);
  }
  static const json kNoArgs = json::object();
  if (args && !args->is_object()) {
    return reject(code::wrong_type, "args: expected an object, got " + type_name(*args), id);
  }
  Fields fields(args ? *args : kNoArgs, "args.");
  Request request;
  request.id = id;
  request.op = *op;
  request.args = parse_args(*op, fields);
  fields.finish();
  if (fields.failed()) {
    auto e = fields.take_error();
    e.id = id;
    return tl::unexpected(std::move(e));
  }
  return request;
}

namespace {
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
}  // namespace

std::string ok_response(const json& id, const json& result) {
  return dump(json{{"v", kApiVersion}, {"id", id}, {"ok", true}, {"result", result}});
}

std::string ok_text_response(const json& id, std::string_view result_json) {
  // nlohmann's key order: "id" < "ok" < "result" < "v".
  std::string out = "{\"id\":" + dump(id) + ",\"ok\":true,\"result\":";
  out += result_json;
  out += ",\"v\":" + std::to_string(kApiVersion) + "}";
  return out;
}

std::string error_response(const json& id, std::string_view code, std::string_view message,
                           const json& details) {
  json error{{"code", std::string(code)}, {"message", std::string(message)}};
  if (!details.is_null()) error["details"] = details;
  return dump(json{{"v", kApiVersion}, {"id", id}, {"ok", false}, {"error", error}});
}

std::string event_response(const json& id, const json& event) {
  return dump(json{{"v", kApiVersion}, {"id", id}, {"event", event}});
}

std::string event_line_response(const json& id, std::string_view event_json) {
  std::string id_text = dump(id);
  std::string out;
  out.reserve(event_json.size() + id_text.size() + 24);
  out += "{\"event\":";
  out += event_json;
  out += ",\"id\":";
  out += id_text;
  out += ",\"v\":" + std::to_string(kApiVersion) + "}";
  return out;
}

}  // namespace stepsnap::protocol
