#include "runner/pipeline/pipeline_spec.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <queue>
#include <set>
#include <sstream>

#include "common/names.h"
#include "common/text.h"
#include "runner/exec/capabilities.h"

namespace stepsnap::runner {

namespace {

// ordered_json keeps env in file order.
using json = nlohmann::ordered_json;

struct Bad {
  std::string path;
  std::string what;
};

// Results inside the parser carry (path, what); the file name is added once.
template <typename T>
using Checked = tl::expected<T, Bad>;

tl::unexpected<Bad> bad(std::string path, std::string what) {
  return tl::unexpected(Bad{std::move(path), std::move(what)});
}

tl::unexpected<Error> to_error(const std::string& file, const Bad& b) {
  Error e{file, "", 0, b.path.empty() ? b.what : b.path + ": " + b.what, "bad_pipeline"};
  return tl::unexpected(std::move(e));
}

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

std::string got(const json& j) { return std::string("got ") + j.type_name(); }

// The keys an object may have; anything else is a typo the user wants to hear about.
Checked<void> only_keys(const json& obj, const std::string& path,
                        const std::vector<std::string>& allowed) {
  for (const auto& [key, value] : obj.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string where = path.empty() ? key : path + "." + key;
      return bad(where, "unknown key; the keys here are " + join(allowed, ", "));
    }
  }
  return {};
}

Checked<std::string> string_at(const json& j, const std::string& path) {
  if (!j.is_string()) return bad(path, "expected a string, " + got(j));
  return j.get<std::string>();
}

Checked<std::string> name_at(const json& j, const std::string& path, const char* what) {
  auto s = string_at(j, path);
  if (!s) return s;
  if (auto problem = name_problem(*s)) {
    return bad(path, std::string(what) + " " + in_quotes(*s) + " " + *problem + "; " +
                         std::string(kNameRule));
  }
  return s;
}

// An absolute path with "." and ".." refused, trailing and doubled '/' removed.
Checked<std::string> absolute_path_at(const json& j, const std::string& path) {
  auto s = string_at(j, path);
  if (!s) return s;
  if (s->empty() || s->front() != '/')
    return bad(path, in_quotes(*s) + " is not absolute; give a path starting with /");
  if (s->find('\0') != std::string::npos) return bad(path, "contains a NUL byte; remove it");
  std::string normal;
  std::istringstream in(*s);
  std::string part;
  while (std::getline(in, part, '/')) {
    if (part.empty()) continue;
    if (part == "." || part == "..")
      return bad(path, in_quotes(*s) + " contains \"" + part + "\"; write the path without it");
    normal += "/" + part;
  }
  return normal.empty() ? std::string("/") : normal;
}

Checked<std::vector<std::pair<std::string, std::string>>> env_at(const json& j,
                                                                 const std::string& path) {
  if (!j.is_object()) return bad(path, "expected an object of NAME: \"value\" pairs, " + got(j));
  std::vector<std::pair<std::string, std::string>> env;
  for (const auto& [key, value] : j.items()) {
    std::string where = path + "." + key;
    if (key.empty()) return bad(path, "a variable name is empty; name it");
    if (key.find('=') != std::string::npos || key.find('\0') != std::string::npos)
      return bad(where, "a variable name cannot contain '=' or a NUL byte; rename it");
    if (!value.is_string())
      return bad(where, "expected a string, " + got(value) + "; quote the value");
    const auto& v = value.get_ref<const std::string&>();
    if (v.find('\0') != std::string::npos) return bad(where, "contains a NUL byte; remove it");
    env.emplace_back(key, v);
  }
  return env;
}

Checked<SnapshotPhases> snapshots_at(const json& j, const std::string& path) {
  auto s = string_at(j, path);
  if (!s) return tl::unexpected(s.error());
  if (*s == "pre,post" || *s == "post,pre") return SnapshotPhases{true, true};
  if (*s == "pre") return SnapshotPhases{true, false};
  if (*s == "post") return SnapshotPhases{false, true};
  if (*s == "none") return SnapshotPhases{false, false};
  return bad(path, in_quotes(*s) + " is not a snapshot choice; use pre,post, pre, post or none");
}

Checked<double> timeout_at(const json& j, const std::string& path) {
  if (!j.is_number()) return bad(path, "expected a number of seconds, " + got(j));
  double t = j.get<double>();
  if (!std::isfinite(t) || t <= 0)
    return bad(path, "must be a positive number of seconds; give e.g. 300");
  return t;
}

// Relative, inside the workspace: no "..", not the workspace itself.
Checked<std::string> marshal_at(const json& j, const std::string& path) {
  auto s = string_at(j, path);
  if (!s) return s;
  if (s->empty())
    return bad(path, "is empty; give a folder relative to the workspace, e.g. .marshal");
  if (s->front() == '/')
    return bad(path,
               in_quotes(*s) + " is absolute; give a folder relative to the workspace volume");
  if (s->find('\0') != std::string::npos) return bad(path, "contains a NUL byte; remove it");
  bool some = false;
  std::istringstream in(*s);
  std::string part;
  while (std::getline(in, part, '/')) {
    if (part == "..")
      return bad(path, in_quotes(*s) + " leaves the workspace with \"..\"; keep it inside");
    if (!part.empty() && part != ".") some = true;
  }
  if (!some) return bad(path, in_quotes(*s) + " is the workspace itself; name a folder inside it");
  return s;
}

Checked<std::vector<std::string>> strings_at(const json& j, const std::string& path) {
  if (!j.is_array()) return bad(path, "expected an array of strings, " + got(j));
  std::vector<std::string> out;
  for (std::size_t k = 0; k < j.size(); ++k) {
    auto s = string_at(j[k], path + "[" + std::to_string(k) + "]");
    if (!s) return tl::unexpected(s.error());
    if (s->find('\0') != std::string::npos)
      return bad(path + "[" + std::to_string(k) + "]", "contains a NUL byte; remove it");
    out.push_back(std::move(*s));
  }
  return out;
}

Checked<PipelineVolume> volume_at(const json& j, const std::string& path) {
  if (!j.is_object())
    return bad(path, "expected an object {\"name\": ..., \"mount\": ...}, " + got(j));
  if (auto ok = only_keys(j, path, {"name", "mount", "read_only"}); !ok)
    return tl::unexpected(ok.error());
  PipelineVolume v;
  auto name = j.find("name");
  if (name == j.end()) return bad(path + ".name", "missing; name the volume");
  auto n = name_at(*name, path + ".name", "volume name");
  if (!n) return tl::unexpected(n.error());
  v.name = *n;
  auto mount = j.find("mount");
  if (mount == j.end())
    return bad(path + ".mount", "missing; give the absolute path where steps see the volume");
  auto m = absolute_path_at(*mount, path + ".mount");
  if (!m) return tl::unexpected(m.error());
  if (*m == "/")
    return bad(path + ".mount", "cannot be /; mount the volume on a directory such as /workspace");
  if (*m == "/proc" || m->rfind("/proc/", 0) == 0)
    return bad(path + ".mount",
               in_quotes(*m) + " is hidden by the step's own /proc; choose another directory");
  v.mount = *m;
  if (auto ro = j.find("read_only"); ro != j.end()) {
    if (!ro->is_boolean()) return bad(path + ".read_only", "expected true or false, " + got(*ro));
    v.read_only = ro->get<bool>();
  }
  return v;
}

// A memory limit: bytes as a number, or a string runner exec's --memory
// takes ("512M", "2G").
Checked<std::uint64_t> memory_at(const json& j, const std::string& path) {
  if (j.is_number_unsigned() && j.get<std::uint64_t>() > 0) return j.get<std::uint64_t>();
  if (j.is_string()) {
    if (auto b = parse_bytes(j.get<std::string>()); b && *b > 0) return *b;
  }
  return bad(path, "expected a positive number of bytes or a size such as \"512M\", " + got(j));
}

Checked<PipelineStep> step_at(const json& j, const std::string& path) {
  if (!j.is_object())
    return bad(path, "expected an object {\"name\": ..., \"command\": [...]}, " + got(j));
  if (auto ok = only_keys(j, path,
                          {"name", "command", "after", "env", "workdir", "timeout_seconds",
                           "memory", "snapshots", "user", "cap_add", "cap_drop", "dev"});
      !ok)
    return tl::unexpected(ok.error());
  PipelineStep s;
  auto name = j.find("name");
  if (name == j.end()) return bad(path + ".name", "missing; name the step");
  auto n = name_at(*name, path + ".name", "step name");
  if (!n) return tl::unexpected(n.error());
  s.name = *n;

  auto command = j.find("command");
  if (command == j.end())
    return bad(path + ".command",
               "missing; give the command as an array, e.g. [\"python3\", "
               "\"steps/train.py\"]");
  auto c = strings_at(*command, path + ".command");
  if (!c) return tl::unexpected(c.error());
  if (c->empty()) return bad(path + ".command", "is empty; give the program and its arguments");
  if (c->front().empty())
    return bad(path + ".command[0]", "the program is an empty string; name the program to run");
  s.command = std::move(*c);

  if (auto after = j.find("after"); after != j.end()) {
    auto a = strings_at(*after, path + ".after");
    if (!a) return tl::unexpected(a.error());
    s.after = std::move(*a);
  }
  if (auto env = j.find("env"); env != j.end()) {
    auto e = env_at(*env, path + ".env");
    if (!e) return tl::unexpected(e.error());
    s.env = std::move(*e);
  }
  if (auto workdir = j.find("workdir"); workdir != j.end()) {
    auto w = absolute_path_at(*workdir, path + ".workdir");
    if (!w) return tl::unexpected(w.error());
    s.workdir = *w;
  }
  if (auto timeout = j.find("timeout_seconds"); timeout != j.end()) {
    auto t = timeout_at(*timeout, path + ".timeout_seconds");
    if (!t) return tl::unexpected(t.error());
    s.timeout_seconds = *t;
  }
  if (auto memory = j.find("memory"); memory != j.end()) {
    auto m = memory_at(*memory, path + ".memory");
    if (!m) return tl::unexpected(m.error());
    s.memory_bytes = *m;
  }
  if (auto snapshots = j.find("snapshots"); snapshots != j.end()) {
    auto p = snapshots_at(*snapshots, path + ".snapshots");
    if (!p) return tl::unexpected(p.error());
    s.snapshots = *p;
  }
  if (auto user = j.find("user"); user != j.end()) {
    if (!user->is_string())
      return bad(path + ".user", "expected \"UID\" or \"UID:GID\", " + got(*user));
    if (auto ok = parse_user(user->get<std::string>(), &s.sandbox); !ok)
      return bad(path + ".user", "expected numeric \"UID\" or \"UID:GID\", e.g. \"1000:1000\"");
  }
  for (auto [key, out] :
       {std::pair{"cap_add", &s.sandbox.cap_add}, std::pair{"cap_drop", &s.sandbox.cap_drop}}) {
    auto caps = j.find(key);
    if (caps == j.end()) continue;
    auto c = strings_at(*caps, path + "." + key);
    if (!c) return tl::unexpected(c.error());
    *out = std::move(*c);
  }
  if (auto caps = step_capabilities(s.sandbox.cap_add, s.sandbox.cap_drop); !caps)
    return bad(path + ".cap_add", caps.error().message());
  if (auto dev = j.find("dev"); dev != j.end()) {
    if (!dev->is_string() || (*dev != "minimal" && *dev != "host"))
      return bad(path + ".dev", "expected \"minimal\" or \"host\", " + got(*dev));
    s.sandbox.host_dev = *dev == "host";
  }
  return s;
}

// Follows the `after` edges from a step that Kahn's algorithm could not
// order until a step repeats: that stretch is a cycle. Returns it in
// dependency order, first step repeated at the end: "a -> b -> a" means b
// runs after a and a after b.
std::vector<std::size_t> find_cycle(const PipelineSpec& spec,
                                    const std::vector<std::vector<std::size_t>>& deps,
                                    const std::vector<bool>& done) {
  std::size_t start = 0;
  while (start < spec.steps.size() && done[start]) ++start;
  // Walk from a blocked step to one of its blocked dependencies; with a finite
  // number of steps the walk must come back to a step it has seen.
  std::vector<std::size_t> walk;
  std::vector<std::size_t> seen_at(spec.steps.size(), SIZE_MAX);
  std::size_t at = start;
  while (seen_at[at] == SIZE_MAX) {
    seen_at[at] = walk.size();
    walk.push_back(at);
    std::size_t next = at;
    for (std::size_t d : deps[at]) {
      if (!done[d]) {
        next = d;
        break;
      }
    }
    at = next;
  }
  // walk[seen_at[at]..] is the cycle, each step depending on the next one.
  std::vector<std::size_t> cycle(walk.begin() + static_cast<std::ptrdiff_t>(seen_at[at]),
                                 walk.end());
  std::reverse(cycle.begin(), cycle.end());
  // Start the report at the cycle's earliest step in the file.
  auto first = std::min_element(cycle.begin(), cycle.end());
  std::rotate(cycle.begin(), first, cycle.end());
  cycle.push_back(cycle.front());
  return cycle;
}

Checked<std::vector<std::size_t>> order_steps(const PipelineSpec& spec) {
  const std::size_t n = spec.steps.size();
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < n; ++i) index.emplace(spec.steps[i].name, i);
  std::vector<std::vector<std::size_t>> deps(n), users(n);
  std::vector<std::size_t> waiting(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    std::set<std::size_t> unique;
    for (std::size_t k = 0; k < spec.steps[i].after.size(); ++k) {
      auto it = index.find(spec.steps[i].after[k]);
      if (it == index.end()) {
        return bad("steps[" + std::to_string(i) + "].after[" + std::to_string(k) + "]",
                   "no step named " + in_quotes(spec.steps[i].after[k]) +
                       "; name a step of this pipeline");
      }
      if (unique.insert(it->second).second) {
        deps[i].push_back(it->second);
        users[it->second].push_back(i);
        ++waiting[i];
      }
    }
  }
  std::priority_queue<std::size_t, std::vector<std::size_t>, std::greater<>> ready;
  for (std::size_t i = 0; i < n; ++i)
    if (waiting[i] == 0) ready.push(i);
  std::vector<std::size_t> order;
  std::vector<bool> done(n, false);
  while (!ready.empty()) {
    std::size_t i = ready.top();
    ready.pop();
    order.push_back(i);
    done[i] = true;
    for (std::size_t u : users[i])
      if (--waiting[u] == 0) ready.push(u);
  }
  if (order.size() != n) {
    std::vector<std::string> names;
    for (std::size_t i : find_cycle(spec, deps, done)) names.push_back(spec.steps[i].name);
    return bad("steps", "the steps' \"after\" lists form a cycle: " + join(names, " -> ") +
                            " (each runs after the one before it); remove one of these "
                            "\"after\" entries");
  }
  return order;
}

Checked<PipelineSpec> spec_from(const json& doc) {
  if (!doc.is_object())
    return bad("top level",
               "expected a JSON object {\"pipeline\": ..., \"volumes\": [...], "
               "\"steps\": [...]}, " +
                   got(doc));
  if (auto ok = only_keys(doc, "", {"pipeline", "volumes", "workdir", "env", "marshal", "steps"});
      !ok)
    return tl::unexpected(ok.error());
  PipelineSpec spec;

  auto pipeline = doc.find("pipeline");
  if (pipeline == doc.end()) return bad("pipeline", "missing; name the pipeline");
  auto p = name_at(*pipeline, "pipeline", "pipeline name");
  if (!p) return tl::unexpected(p.error());
  spec.pipeline = *p;

  auto volumes = doc.find("volumes");
  if (volumes == doc.end()) return bad("volumes", "missing; list the volumes, the workspace first");
  if (!volumes->is_array()) return bad("volumes", "expected an array of volumes, " + got(*volumes));
  if (volumes->empty()) return bad("volumes", "is empty; list at least the workspace volume");
  for (std::size_t k = 0; k < volumes->size(); ++k) {
    std::string path = "volumes[" + std::to_string(k) + "]";
    auto v = volume_at((*volumes)[k], path);
    if (!v) return tl::unexpected(v.error());
    for (std::size_t e = 0; e < spec.volumes.size(); ++e) {
      if (spec.volumes[e].name == v->name)
        return bad(path + ".name", "volume " + in_quotes(v->name) + " is already volumes[" +
                                       std::to_string(e) + "]; give each volume once");
      if (spec.volumes[e].mount == v->mount)
        return bad(path + ".mount", in_quotes(v->mount) + " is already the mount of volumes[" +
                                        std::to_string(e) + "] (" + spec.volumes[e].name +
                                        "); give each volume its own directory");
    }
    spec.volumes.push_back(std::move(*v));
  }
  if (spec.volumes[0].read_only)
    return bad("volumes[0].read_only",
               "the first volume is the workspace, where steps pass data through the marshal "
               "folder; it cannot be read-only (put the workspace first)");

  if (auto workdir = doc.find("workdir"); workdir != doc.end()) {
    auto w = absolute_path_at(*workdir, "workdir");
    if (!w) return tl::unexpected(w.error());
    spec.workdir = *w;
  }
  if (auto env = doc.find("env"); env != doc.end()) {
    auto e = env_at(*env, "env");
    if (!e) return tl::unexpected(e.error());
    spec.env = std::move(*e);
  }
  if (auto marshal = doc.find("marshal"); marshal != doc.end()) {
    auto m = marshal_at(*marshal, "marshal");
    if (!m) return tl::unexpected(m.error());
    spec.marshal = *m;
  }

  auto steps = doc.find("steps");
  if (steps == doc.end()) return bad("steps", "missing; list the pipeline's steps");
  if (!steps->is_array()) return bad("steps", "expected an array of steps, " + got(*steps));
  if (steps->empty()) return bad("steps", "is empty; give at least one step");
  for (std::size_t k = 0; k < steps->size(); ++k) {
    std::string path = "steps[" + std::to_string(k) + "]";
    auto s = step_at((*steps)[k], path);
    if (!s) return tl::unexpected(s.error());
    for (std::size_t e = 0; e < spec.steps.size(); ++e) {
      if (spec.steps[e].name == s->name)
        return bad(path + ".name", "step " + in_quotes(s->name) + " is already steps[" +
                                       std::to_string(e) + "]; give each step its own name");
    }
    spec.steps.push_back(std::move(*s));
  }
  // `after` is checked once every step is known: a step may name a later one.
  for (std::size_t i = 0; i < spec.steps.size(); ++i) {
    const auto& after = spec.steps[i].after;
    for (std::size_t k = 0; k < after.size(); ++k) {
      std::string path = "steps[" + std::to_string(i) + "].after[" + std::to_string(k) + "]";
      if (after[k] == spec.steps[i].name)
        return bad(path, "step " + in_quotes(after[k]) + " cannot run after itself; remove it");
      if (std::find(after.begin(), after.begin() + static_cast<std::ptrdiff_t>(k), after[k]) !=
          after.begin() + static_cast<std::ptrdiff_t>(k))
        return bad(path, in_quotes(after[k]) + " is listed twice; list it once");
    }
  }
  auto order = order_steps(spec);
  if (!order) return tl::unexpected(order.error());
  return spec;
}

// nlohmann's "[json.exception.parse_error.101] parse error at line 3, column
// 5: syntax error ..." without the bracketed id.
std::string parse_error_text(const std::string& what) {
  std::string text = what;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find("] ");
    if (close != std::string::npos) text = text.substr(close + 2);
  }
  // "last read: ..." quotes the input; an ill-formed byte must not reach the terminal raw.
  std::string out;
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += std::string("\\x") + kHex[u >> 4] + kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

// Refuses a key given twice in one object (nlohmann keeps the last one
// silently); remembers where, as a JSON path.
class DuplicateKeys {
 public:
  bool operator()(int, json::parse_event_t event, json& parsed) {
    using E = json::parse_event_t;
    switch (event) {
      case E::object_start:
        frames_.push_back({true, {}, 0, {}});
        break;
      case E::array_start:
        frames_.push_back({false, {}, 0, {}});
        break;
      case E::key:
        if (!frames_.empty() && parsed.is_string()) {
          auto& f = frames_.back();
          f.key = parsed.get<std::string>();
          if (!f.keys.insert(f.key).second && found_.empty()) found_ = path();
        }
        break;
      case E::object_end:
      case E::array_end:
        if (!frames_.empty()) frames_.pop_back();
        finished_value();
        break;
      case E::value:
        finished_value();
        break;
    }
    return true;
  }

  const std::string& found() const { return found_; }

 private:
  struct Frame {
    bool object;
    std::string key;
    std::size_t index;
    std::set<std::string> keys;
  };

  void finished_value() {
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().index;
  }

  std::string path() const {
    std::string p;
    for (const auto& f : frames_) {
      if (f.object)
        p += (p.empty() ? "" : ".") + f.key;
      else
        p += "[" + std::to_string(f.index) + "]";
    }
    return p;
  }

  std::vector<Frame> frames_;
  std::string found_;
};

}  // namespace

Result<PipelineSpec> parse_pipeline(const std::string& text, const std::string& file_for_errors) {
  DuplicateKeys duplicates;
  json doc;
  try {
    doc = json::parse(text, std::ref(duplicates), /*allow_exceptions=*/true);
  } catch (const json::parse_error& e) {
    return to_error(file_for_errors,
                    {"", "not valid JSON: " + parse_error_text(e.what()) + "; fix the file there"});
  } catch (const json::exception& e) {
    return to_error(file_for_errors,
                    {"", "not valid JSON: " + parse_error_text(e.what()) + "; fix the file"});
  }
  if (!duplicates.found().empty())
    return to_error(file_for_errors,
                    {duplicates.found(), "key given twice in one object; give it once"});
  auto spec = spec_from(doc);
  if (!spec) return to_error(file_for_errors, spec.error());
  return std::move(*spec);
}

Result<PipelineSpec> load_pipeline(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail_errno("open pipeline file", path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return fail_errno("read pipeline file", path);
  return parse_pipeline(text.str(), path);
}

Result<std::vector<std::size_t>> execution_order(const PipelineSpec& spec) {
  auto order = order_steps(spec);
  if (!order) return to_error("pipeline " + spec.pipeline, order.error());
  return std::move(*order);
}

std::vector<std::size_t> dependents_of(const PipelineSpec& spec, std::size_t i) {
  const std::size_t n = spec.steps.size();
  if (i >= n) return {};
  std::vector<bool> hit(n, false);
  std::vector<std::size_t> todo{i};
  while (!todo.empty()) {
    const std::string& name = spec.steps[todo.back()].name;
    todo.pop_back();
    for (std::size_t u = 0; u < n; ++u) {
      if (hit[u] || u == i) continue;
      const auto& after = spec.steps[u].after;
      if (std::find(after.begin(), after.end(), name) != after.end()) {
        hit[u] = true;
        todo.push_back(u);
      }
    }
  }
  std::vector<std::size_t> order;
  if (auto o = order_steps(spec)) {
    order = std::move(*o);
  } else {
    // Not a valid spec (parse_pipeline never returns one): file order.
    for (std::size_t k = 0; k < n; ++k) order.push_back(k);
  }
  std::vector<std::size_t> out;
  for (std::size_t k : order)
    if (hit[k]) out.push_back(k);
  return out;
}

std::optional<std::size_t> find_step(const PipelineSpec& spec, const std::string& name) {
  for (std::size_t i = 0; i < spec.steps.size(); ++i)
    if (spec.steps[i].name == name) return i;
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> step_env(const PipelineSpec& spec, std::size_t i) {
  auto env = spec.env;
  for (const auto& [key, value] : spec.steps.at(i).env) {
    auto it = std::find_if(env.begin(), env.end(), [&](const auto& kv) { return kv.first == key; });
    if (it != env.end())
      it->second = value;
    else
      env.emplace_back(key, value);
  }
  return env;
}

std::optional<std::string> step_workdir(const PipelineSpec& spec, std::size_t i) {
  const auto& step = spec.steps.at(i);
  return step.workdir ? step.workdir : spec.workdir;
}

ExecOptions step_exec_options(const PipelineSpec& spec, std::size_t i, const std::string& run) {
  const auto& step = spec.steps.at(i);
  ExecOptions o;
  o.pipeline = spec.pipeline;
  o.run = run;
  o.step = step.name;
  o.hostname = step.name;
  for (const auto& v : spec.volumes) o.volumes.push_back({v.name, v.mount, v.read_only});
  o.workdir = step_workdir(spec, i);
  o.env = step_env(spec, i);
  o.timeout_seconds = step.timeout_seconds;
  o.memory_bytes = step.memory_bytes;
  o.snapshots = step.snapshots;
  o.sandbox = step.sandbox;
  o.marshal = spec.marshal;
  o.command = step.command;
  return o;
}

std::string pipeline_to_json(const PipelineSpec& spec) {
  auto env_of = [](const std::vector<std::pair<std::string, std::string>>& env) {
    json e = json::object();
    for (const auto& [k, v] : env) e[k] = v;
    return e;
  };
  json doc;
  doc["pipeline"] = spec.pipeline;
  doc["volumes"] = json::array();
  for (const auto& v : spec.volumes) {
    json j = {{"name", v.name}, {"mount", v.mount}};
    if (v.read_only) j["read_only"] = true;
    doc["volumes"].push_back(j);
  }
  if (spec.workdir) doc["workdir"] = *spec.workdir;
  if (!spec.env.empty()) doc["env"] = env_of(spec.env);
  doc["marshal"] = spec.marshal;
  doc["steps"] = json::array();
  for (const auto& s : spec.steps) {
    json j = {{"name", s.name}, {"command", s.command}, {"after", s.after}};
    if (!s.env.empty()) j["env"] = env_of(s.env);
    if (s.workdir) j["workdir"] = *s.workdir;
    if (s.timeout_seconds) j["timeout_seconds"] = *s.timeout_seconds;
    if (s.memory_bytes) j["memory"] = *s.memory_bytes;
    if (!s.snapshots.pre || !s.snapshots.post)
      j["snapshots"] = s.snapshots.pre ? "pre" : s.snapshots.post ? "post" : "none";
    if (s.sandbox.uid != 0 || s.sandbox.gid != 0)
      j["user"] = std::to_string(s.sandbox.uid) + ":" + std::to_string(s.sandbox.gid);
    if (!s.sandbox.cap_add.empty()) j["cap_add"] = s.sandbox.cap_add;
    if (!s.sandbox.cap_drop.empty()) j["cap_drop"] = s.sandbox.cap_drop;
    if (s.sandbox.host_dev) j["dev"] = "host";
    doc["steps"].push_back(j);
  }
  return doc.dump(2);
}

}  // namespace stepsnap::runner
