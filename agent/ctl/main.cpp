// stepsnapctl: every stepsnapd API call from the shell. Tables by default,
// --json for scripts (the answer's result, one JSON document; events one per
// line). Errors are one line on stderr; exit 1 for an error answer or a
// connection failure, 2 for a usage error.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/ctl/ctl_format.h"
#include "agent/ctl/retention_format.h"
#include "common/duration.h"
#include "common/size.h"
#include "common/unique_fd.h"
#include "protocol/api_client.h"

using json = nlohmann::json;
using namespace stepsnap;

namespace {

constexpr const char* kDefaultSocket = "/run/stepsnap/stepsnapd.sock";

constexpr const char* kUsage = R"(usage: stepsnapctl [--socket PATH] [--json] COMMAND ...

Talks to stepsnapd over its Unix socket (default /run/stepsnap/stepsnapd.sock).

commands:
  volume create NAME SIZE [--filesystem ext4|xfs] [--label K=V]...
                                              a new thin volume (SIZE: bytes or 512M, 10G, ...),
                                              raw, or with a filesystem the agent makes
  volume list [--limit N] [--after NAME]      volumes and clones, and the pool's usage
  volume delete NAME                          delete a volume or clone
  snapshot create VOLUME [--name NAME] [--label K=V]...
  snapshot list [--volume V] [--pipeline P] [--run R] [--step S] [--limit N] [--after NAME]
                                              lists come in pages (default 1000, at most 10000):
                                              the next starts --after the last one shown
  snapshot show NAME                          one snapshot, with lineage and step metadata
  snapshot delete NAME
  snapshot label NAME KEY=VALUE...            add labels to a snapshot (a key it has gets the new value)
  snapshot send NAME [--base SNAP] [-o FILE]  the snapshot as a stream (stdout without -o); with
                                              --base only the blocks that differ from SNAP
  snapshot receive [--name NAME] [-i FILE]    a stream (stdin without -i) becomes a snapshot here
  clone create SNAPSHOT NAME [--label K=V]... a writable clone of a snapshot
  restore SNAPSHOT NAME [--label K=V]...      a snapshot becomes a new volume
  step register --pipeline P --run R --step S --cgroup PATH --volume V [--volume V]...
                [--policy pre|post|both|none] [--command TEXT] [--label K=V]...
  step status PIPELINE RUN STEP
  run show PIPELINE RUN                       the run's steps and snapshots
  run clone PIPELINE RUN VOLUME [--snapshot S]
                                              the run's writable clone of VOLUME (made on first ask)
  events [--follow] [--since N] [--limit N]   the event stream (--since 0: all retained),
                                              at most N events with --limit
  retention show                              the retention rules in force, and where from
  retention set PIPELINE|'*' [--keep-runs N] [--keep-failed-runs N] [--max-age DURATION]
                [--keep LABEL]...             a pipeline's rule ('*': pipelines without one);
                                              DURATION like 12h, 7d, 2w
  retention clear PIPELINE|'*'                drop the rule set over the API (the config's applies)
  gc [--dry-run] [--pipeline P]               sweep now: delete (or list) the runs the rules let go

options:
  --socket PATH   the daemon's socket
  --json          print the answer as JSON
  -h, --help      this text
)";

struct Usage {
  std::string message;
};

[[noreturn]] void usage_error(const std::string& m) { throw Usage{m}; }

// Splits the words after the command into positionals and --flags.
struct Words {
  std::vector<std::string> positional;
  std::multimap<std::string, std::string> flags;

  std::string one(const std::string& flag) const {
    auto n = flags.count(flag);
    if (n > 1) usage_error("--" + flag + " given twice");
    return n ? flags.find(flag)->second : std::string();
  }
  bool has(const std::string& flag) const { return flags.count(flag) > 0; }
};

Words split(const std::vector<std::string>& args, const std::vector<std::string>& value_flags,
            const std::vector<std::string>& bool_flags) {
  Words w;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      w.positional.push_back(a);
      continue;
    }
    std::string name = a.substr(2);
    std::string value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    if (std::find(bool_flags.begin(), bool_flags.end(), name) != bool_flags.end()) {
      if (inline_value) usage_error("--" + name + " takes no value");
      w.flags.emplace(name, "");
    } else if (std::find(value_flags.begin(), value_flags.end(), name) != value_flags.end()) {
      if (!inline_value) {
        if (i + 1 >= args.size()) usage_error("--" + name + " needs a value");
        value = args[++i];
      }
      w.flags.emplace(name, value);
    } else {
      usage_error("unknown option " + a);
    }
  }
  return w;
}

void expect_positional(const Words& w, std::size_t n, const std::string& what) {
  if (w.positional.size() != n) usage_error("expected " + what);
}

// One KEY=VALUE word into `out`; `who` names the flag or command in the error.
void put_key_value(json& out, const std::string& word, const std::string& who) {
  auto eq = word.find('=');
  if (eq == std::string::npos || eq == 0)
    usage_error(who + " wants KEY=VALUE, not \"" + word + "\"");
  out[word.substr(0, eq)] = word.substr(eq + 1);
}

json labels(const Words& w) {
  json out = json::object();
  for (auto [it, end] = w.flags.equal_range("label"); it != end; ++it)
    put_key_value(out, it->second, "--label");
  return out;
}

void put_labels(json& args, const Words& w) {
  json l = labels(w);
  if (!l.empty()) args["labels"] = l;
}

std::uint64_t number(const std::string& text, const std::string& what) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) {
    usage_error(what + " must be a whole number, not \"" + text + "\"");
  }
  return std::stoull(text);
}

// Where build() leaves snapshot send's -o / receive's -i (empty: stdout /
// stdin); run() takes it out of the args before sending them.
constexpr const char* kStreamFileKey = "\x01stream_file";

// -o FILE and -i FILE as the long flags split() knows.
std::vector<std::string> short_flags(std::vector<std::string> words) {
  for (auto& w : words) {
    if (w == "-o") w = "--output";
    if (w == "-i") w = "--input";
  }
  return words;
}

// A list's page: the daemon checks the bounds and says what to do. Without
// --limit, kCliPageSize rows, not the API's 1000: a page of 1000 snapshots
// took 0.8 s in the emulated guest, about 0.8 ms a row even after the
// agent stopped building JSON values for it; 50 rows fit the 50 ms a read
// should take there (docs/benchmarks.md, scale) and a screen.
constexpr std::uint64_t kCliPageSize = 50;

void put_page(json& args, const Words& w) {
  args["limit"] = w.has("limit") ? number(w.one("limit"), "--limit") : kCliPageSize;
  if (w.has("after")) args["after"] = w.one("after");
}

// Turns the command line into an op and its args.
std::pair<std::string, json> build(const std::vector<std::string>& cmd) {
  if (cmd.empty()) usage_error("no command given");
  std::string group = cmd[0];
  std::string verb = cmd.size() > 1 ? cmd[1] : "";
  std::vector<std::string> rest(cmd.begin() + std::min<std::size_t>(2, cmd.size()), cmd.end());
  json args = json::object();
  if (group == "volume") {
    if (verb == "create") {
      auto w = split(rest, {"label", "filesystem"}, {});
      expect_positional(w, 2, "volume create NAME SIZE");
      auto size = parse_size(w.positional[1]);
      if (!size) usage_error("\"" + w.positional[1] + "\" is not a size; use bytes or K, M, G, T");
      args = {{"name", w.positional[0]}, {"size_bytes", *size}};
      if (w.has("filesystem")) args["filesystem"] = w.one("filesystem");
      put_labels(args, w);
      return {"volume.create", args};
    }
    if (verb == "list") {
      auto w = split(rest, {"limit", "after"}, {});
      expect_positional(w, 0, "only --limit N and --after NAME");
      put_page(args, w);
      return {"volume.list", args};
    }
    if (verb == "delete") {
      auto w = split(rest, {}, {});
      expect_positional(w, 1, "volume delete NAME");
      return {"volume.delete", {{"name", w.positional[0]}}};
    }
  } else if (group == "snapshot") {
    if (verb == "create") {
      auto w = split(rest, {"name", "label"}, {});
      expect_positional(w, 1, "snapshot create VOLUME");
      args = {{"volume", w.positional[0]}};
      if (w.has("name")) args["name"] = w.one("name");
      put_labels(args, w);
      return {"snapshot.create", args};
    }
    if (verb == "list") {
      auto w = split(rest, {"volume", "pipeline", "run", "step", "limit", "after"}, {});
      expect_positional(w, 0, "only --volume, --pipeline, --run, --step, --limit, --after");
      for (const char* f : {"volume", "pipeline", "run", "step"}) {
        if (w.has(f)) args[f] = w.one(f);
      }
      put_page(args, w);
      return {"snapshot.list", args};
    }
    if (verb == "send") {
      auto w = split(short_flags(rest), {"base", "output"}, {});
      expect_positional(w, 1, "snapshot send NAME [--base SNAP] [-o FILE]");
      args = {{"name", w.positional[0]}};
      if (w.has("base")) args["base"] = w.one("base");
      args[kStreamFileKey] = w.one("output");
      return {"snapshot.send", args};
    }
    if (verb == "receive") {
      auto w = split(short_flags(rest), {"name", "input"}, {});
      expect_positional(w, 0, "snapshot receive [--name NAME] [-i FILE]");
      if (w.has("name")) args["name"] = w.one("name");
      args[kStreamFileKey] = w.one("input");
      return {"snapshot.receive", args};
    }
    if (verb == "label") {
      auto w = split(rest, {}, {});
      if (w.positional.size() < 2) usage_error("expected snapshot label NAME KEY=VALUE...");
      json l = json::object();
      for (std::size_t i = 1; i < w.positional.size(); ++i)
        put_key_value(l, w.positional[i], "snapshot label");
      return {"snapshot.label", {{"name", w.positional[0]}, {"labels", l}}};
    }
    if (verb == "show" || verb == "delete") {
      auto w = split(rest, {}, {});
      expect_positional(w, 1, "snapshot " + verb + " NAME");
      return {"snapshot." + verb, {{"name", w.positional[0]}}};
    }
  } else if (group == "clone" && verb == "create") {
    auto w = split(rest, {"label"}, {});
    expect_positional(w, 2, "clone create SNAPSHOT NAME");
    args = {{"snapshot", w.positional[0]}, {"name", w.positional[1]}};
    put_labels(args, w);
    return {"clone.create", args};
  } else if (group == "restore") {
    std::vector<std::string> words(cmd.begin() + 1, cmd.end());
    auto w = split(words, {"label"}, {});
    expect_positional(w, 2, "restore SNAPSHOT NAME");
    args = {{"snapshot", w.positional[0]}, {"name", w.positional[1]}};
    put_labels(args, w);
    return {"restore", args};
  } else if (group == "step") {
    if (verb == "register") {
      auto w = split(
          rest, {"pipeline", "run", "step", "cgroup", "volume", "policy", "command", "label"}, {});
      expect_positional(w, 0, "only options to step register");
      for (const char* f : {"pipeline", "run", "step", "cgroup"}) {
        if (!w.has(f)) usage_error(std::string("step register needs --") + f);
        args[f] = w.one(f);
      }
      json volumes = json::array();
      for (auto [it, end] = w.flags.equal_range("volume"); it != end; ++it)
        volumes.push_back(it->second);
      if (volumes.empty()) usage_error("step register needs at least one --volume");
      args["volumes"] = volumes;
      if (w.has("policy")) args["policy"] = w.one("policy");
      if (w.has("command")) args["command"] = w.one("command");
      put_labels(args, w);
      // This connection closes as soon as the answer is printed: lease the
      // registration to time (--step-lease), not to the connection.
      args["lease"] = "time";
      return {"step.register", args};
    }
    if (verb == "status") {
      auto w = split(rest, {}, {});
      expect_positional(w, 3, "step status PIPELINE RUN STEP");
      return {"step.status",
              {{"pipeline", w.positional[0]}, {"run", w.positional[1]}, {"step", w.positional[2]}}};
    }
  } else if (group == "run" && verb == "show") {
    auto w = split(rest, {}, {});
    expect_positional(w, 2, "run show PIPELINE RUN");
    return {"run.show", {{"pipeline", w.positional[0]}, {"run", w.positional[1]}}};
  } else if (group == "run" && verb == "clone") {
    auto w = split(rest, {"snapshot"}, {});
    expect_positional(w, 3, "run clone PIPELINE RUN VOLUME");
    args = {{"pipeline", w.positional[0]}, {"run", w.positional[1]}, {"volume", w.positional[2]}};
    if (w.has("snapshot")) args["snapshot"] = w.one("snapshot");
    return {"run.clone", args};
  } else if (group == "events") {
    std::vector<std::string> words(cmd.begin() + 1, cmd.end());
    auto w = split(words, {"since", "limit"}, {"follow"});
    expect_positional(w, 0, "only --follow, --since N and --limit N");
    args["follow"] = w.has("follow");
    if (w.has("since")) args["since"] = number(w.one("since"), "--since");
    if (w.has("limit")) args["limit"] = number(w.one("limit"), "--limit");
    return {"events.subscribe", args};
  }
  if (group == "retention") {
    if (verb == "show") {
      expect_positional(split(rest, {}, {}), 0, "retention show");
      return {"retention.show", args};
    }
    if (verb == "set" || verb == "clear") {
      auto w = split(rest,
                     verb == "set" ? std::vector<std::string>{"keep-runs", "keep-failed-runs",
                                                              "max-age", "keep"}
                                   : std::vector<std::string>{},
                     {});
      expect_positional(w, 1, "retention " + verb + " PIPELINE (or '*' for the default rule)");
      if (w.positional[0] != "*") args["pipeline"] = w.positional[0];
      if (verb == "clear") {
        args["clear"] = true;
        return {"retention.set", args};
      }
      if (w.has("keep-runs")) args["keep_runs"] = number(w.one("keep-runs"), "--keep-runs");
      if (w.has("keep-failed-runs"))
        args["keep_failed_runs"] = number(w.one("keep-failed-runs"), "--keep-failed-runs");
      if (w.has("max-age")) {
        auto s = parse_duration_seconds(w.one("max-age"));
        if (!s)
          usage_error("--max-age \"" + w.one("max-age") + "\" is not a duration like 12h, 7d, 2w");
        args["max_age_seconds"] = *s;
      }
      json keep = json::array();
      for (auto [it, end] = w.flags.equal_range("keep"); it != end; ++it)
        keep.push_back(it->second);
      if (!keep.empty()) args["keep"] = keep;
      return {"retention.set", args};
    }
  } else if (group == "gc") {
    std::vector<std::string> words(cmd.begin() + 1, cmd.end());
    auto w = split(words, {"pipeline"}, {"dry-run"});
    expect_positional(w, 0, "only --dry-run and --pipeline P");
    args["dry_run"] = w.has("dry-run");
    if (w.has("pipeline")) args["pipeline"] = w.one("pipeline");
    return {"gc", args};
  }
  usage_error("unknown command \"" + group + (verb.empty() ? "" : " " + verb) + "\"");
}

// snapshot send / receive: the stream's file (opened here, with the
// caller's own permissions) or stdout / stdin goes to stepsnapd with the
// request, which writes or reads the stream itself.
int transfer(const std::string& socket, const std::string& op, const json& args,
             const std::string& file, bool as_json) {
  const bool sending = op == "snapshot.send";
  UniqueFd opened;
  int fd = sending ? STDOUT_FILENO : STDIN_FILENO;
  if (!file.empty()) {
    // A new file, so that a failed send can remove it and leave nothing half-made.
    opened = UniqueFd(sending ? ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)
                              : ::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!opened) {
      std::cerr << "stepsnapctl: open " << file << ": " << std::strerror(errno)
                << (sending && errno == EEXIST ? " (remove it or pick another -o FILE)" : "")
                << "\n";
      return 1;
    }
    fd = opened.get();
  } else if (::isatty(fd)) {
    usage_error(sending ? "refusing to write a stream to a terminal; give -o FILE or a pipe"
                        : "refusing to read a stream from a terminal; give -i FILE or a pipe");
  }
  auto fail_and_clean = [&](const std::string& message) {
    std::cerr << "stepsnapctl: " << message << "\n";
    if (sending && !file.empty()) ::unlink(file.c_str());
    return 1;
  };
  auto client = protocol::ApiClient::connect(socket);
  if (!client) return fail_and_clean(client.error().message());
  if (auto r = client->send(op, args, fd); !r) return fail_and_clean(r.error().message());
  auto answer = client->read();
  if (!answer) return fail_and_clean(answer.error().message());
  if (!answer->value("ok", false)) {
    const json& err = answer->contains("error") ? (*answer)["error"] : json::object();
    return fail_and_clean(agent::format_error(err));
  }
  const json result = answer->value("result", json::object());
  // When the stream is on stdout the summary must not join it.
  std::ostream& out = (sending && file.empty()) ? std::cerr : std::cout;
  if (as_json) {
    out << result.dump(2) << "\n";
  } else if (sending) {
    out << "sent " << result.value("name", "") << ": " << result.value("bytes", 0) << " bytes, "
        << result.value("data_blocks", 0) << " blocks of " << result.value("block_bytes", 0)
        << " bytes" << (result.value("incremental", false) ? " (incremental)" : " (full)") << "\n";
  } else {
    const json& s = result["snapshot"];
    out << "received " << s.value("name", "") << " (uuid " << s.value("uuid", "")
        << "): " << result.value("bytes", 0) << " bytes, " << result.value("data_blocks", 0)
        << " blocks\n";
  }
  return 0;
}

int run(int argc, char** argv) {
  std::string socket = kDefaultSocket;
  bool as_json = false;
  std::vector<std::string> cmd;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (cmd.empty() && (a == "-h" || a == "--help")) {
      std::cout << kUsage;
      return 0;
    }
    if (cmd.empty() && a == "--json") {
      as_json = true;
    } else if (a == "--socket" || a.rfind("--socket=", 0) == 0) {  // anywhere
      if (a == "--socket") {
        if (i + 1 >= argc) usage_error("--socket needs a path");
        socket = argv[++i];
      } else {
        socket = a.substr(9);
      }
    } else if (a == "--json") {
      as_json = true;  // also accepted after the command
    } else {
      cmd.push_back(a);
    }
  }
  auto [op, args] = build(cmd);
  if (op == "snapshot.send" || op == "snapshot.receive") {
    std::string file = args[kStreamFileKey].get<std::string>();
    args.erase(kStreamFileKey);
    return transfer(socket, op, args, file, as_json);
  }

  auto client = protocol::ApiClient::connect(socket);
  if (!client) {
    std::cerr << "stepsnapctl: " << client.error().message() << "\n";
    return 1;
  }
  if (auto r = client->send(op, args); !r) {
    std::cerr << "stepsnapctl: " << r.error().message() << "\n";
    return 1;
  }
  auto answer = client->read();
  if (!answer) {
    std::cerr << "stepsnapctl: " << answer.error().message() << "\n";
    return 1;
  }
  if (!answer->value("ok", false)) {
    const json& err = answer->contains("error") ? (*answer)["error"] : json::object();
    if (as_json) std::cout << answer->dump() << "\n";
    std::cerr << "stepsnapctl: " << agent::format_error(err) << "\n";
    return 1;
  }
  const json result = answer->contains("result") ? (*answer)["result"] : json::object();
  if (op != "events.subscribe") {
    if (as_json) {
      std::cout << result.dump(2) << "\n";
      return 0;
    }
    // Snapshots carry their origin's device id; the volume list names it
    // (best effort: without it the tables show "#<id>").
    agent::DeviceNames names;
    if (op == "snapshot.list" || op == "run.show" || op == "step.status") {
      if (auto v = client->request("volume.list", json::object())) names = agent::device_names(*v);
    }
    if (op == "retention.show" || op == "retention.set")
      std::cout << agent::format_rules(result);
    else if (op == "gc")
      std::cout << agent::format_sweep(result);
    else
      std::cout << agent::format_result(op, result, names);
    if (result.contains("next_after")) {
      std::cerr << "stepsnapctl: more follow; the next page: --after "
                << result["next_after"].get<std::string>() << "\n";
    }
    return 0;
  }
  // Events: one per line until the stream ends (follow=false) or the daemon goes.
  const bool follow = args.value("follow", false);
  std::uint64_t last_seq = result.value("last_seq", std::uint64_t{0});
  std::uint64_t seen = args.value("since", last_seq);
  const std::uint64_t limit = args.value("limit", std::uint64_t{0});
  std::uint64_t shown = 0;
  for (;;) {
    if (!follow && seen >= last_seq) return 0;
    if (limit && shown == limit) return 0;
    auto line = client->read();
    if (!line) {
      if (!follow) return 0;
      std::cerr << "stepsnapctl: " << line.error().message() << " (resume with --since " << seen
                << ")\n";
      return 1;
    }
    if (!line->contains("event")) {
      if (line->contains("error")) {
        std::cerr << "stepsnapctl: " << agent::format_error((*line)["error"]) << "\n";
        return 1;
      }
      continue;
    }
    const json& e = (*line)["event"];
    seen = e.value("seq", seen);
    ++shown;
    std::cout << (as_json ? e.dump() : agent::format_event(e)) << std::endl;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Usage& u) {
    std::cerr << "stepsnapctl: " << u.message << " (see stepsnapctl --help)\n";
    return 2;
  }
}
