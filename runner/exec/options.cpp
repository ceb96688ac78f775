#include "runner/exec/options.h"

#include <boost/program_options.hpp>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <sstream>

#include "common/names.h"
#include "common/size.h"
#include "runner/exec/capabilities.h"
#include "runner/exec/kfp_metadata.h"
#include "runner/exec/step_env.h"

namespace stepsnap::runner {
namespace po = boost::program_options;

namespace {

po::options_description exec_description() {
  po::options_description d("runner exec options");
  // clang-format off
  d.add_options()
    ("help,h", "show this help")
    ("agent", po::value<std::string>()->value_name("SOCKET"),
     "stepsnapd's Unix socket (default /run/stepsnap/stepsnapd.sock)")
    ("no-agent", "debug mode: no agent, no snapshots; a volume is HOSTDIR:/path[:ro] and "
     "the host directory is bind-mounted as it is")
    ("pipeline", po::value<std::string>()->value_name("P"), "pipeline name")
    ("run", po::value<std::string>()->value_name("R"), "run id of the pipeline")
    ("step", po::value<std::string>()->value_name("S"), "step name")
    ("volume", po::value<std::vector<std::string>>()->value_name("NAME:/path[:ro]")->composing(),
     "mount this run's clone of volume NAME at /path (read-only with :ro); repeatable; "
     "the first volume is the workspace")
    ("clone-from", po::value<std::vector<std::string>>()->value_name("VOLUME=SNAPSHOT")->composing(),
     "make this run's clone of VOLUME from SNAPSHOT (default: the volume's newest snapshot, "
     "or one taken now); only on the run's first use of VOLUME; repeatable")
    ("workdir", po::value<std::string>()->value_name("DIR"),
     "absolute working directory of the step (default: runner's own)")
    ("env", po::value<std::vector<std::string>>()->value_name("K=V")->composing(),
     "set an environment variable for the step; repeatable; wins over --env-file")
    ("env-file", po::value<std::vector<std::string>>()->value_name("FILE")->composing(),
     "NAME=VALUE lines (# comments, blank lines) for the step's environment; repeatable")
    ("user", po::value<std::string>()->value_name("UID[:GID]"),
     "run CMD as this numeric uid and gid (GID defaults to UID), with no capability; "
     "default: root, with containerd's default capabilities")
    ("cap-add", po::value<std::vector<std::string>>()->value_name("CAP")->composing(),
     "give a root step this capability too (e.g. NET_ADMIN, or ALL); SYS_ADMIN also lets it "
     "mount and make namespaces; repeatable")
    ("cap-drop", po::value<std::vector<std::string>>()->value_name("CAP")->composing(),
     "take this capability from a root step's default set (or ALL); repeatable")
    ("rootfs", po::value<std::string>()->value_name("DIR"),
     "the step's root, read-only (default: the host's /, read-only)")
    ("dev", po::value<std::string>()->value_name("minimal|host"),
     "minimal: a /dev of null, zero, full, random, urandom, tty, pts, shm (default); "
     "host: the host's /dev, every device of the node included (for steps that attach loop "
     "devices; use with --cap-add SYS_ADMIN)")
    ("hostname", po::value<std::string>()->value_name("H"), "hostname of the step (default: S)")
    ("net", po::value<std::string>()->value_name("none|host"),
     "none: own network namespace with only loopback (default); host: the host's network")
    ("memory", po::value<std::string>()->value_name("BYTES"),
     "memory.max of the step's cgroup; suffixes K, M, G, T")
    ("cpus", po::value<std::string>()->value_name("N"), "cpu.max of the step's cgroup, in CPUs")
    ("timeout", po::value<std::string>()->value_name("SECONDS"),
     "kill the whole step (every process of its cgroup) after this long; exit 124")
    ("snapshots", po::value<std::string>()->value_name("pre,post|pre|post|none"),
     "which snapshots the agent takes around the step (default pre,post)")
    ("marshal", po::value<std::string>()->value_name("DIR"),
     "marshal folder, created before the step starts: relative to the workspace volume's "
     "mount point, or absolute (default .marshal)")
    ("kfp-ui-metadata", po::value<std::string>()->value_name("PATH"),
     "after the step, write KFP's mlpipeline-ui-metadata JSON to PATH: a markdown output "
     "naming the step's pre- and post-snapshots, linked to their pages in stepsnapd's view")
    ("view-url", po::value<std::string>()->value_name("URL"),
     "where those links point: stepsnapd's HTTP view as a browser reaches it "
     "(default http://127.0.0.1:9477)");
  // clang-format on
  return d;
}

tl::unexpected<Error> usage(std::string what, std::string detail = {}) {
  return fail(std::move(what), "", 0, std::move(detail));
}

Result<VolumeOption> parse_volume(const std::string& text) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, ':')) parts.push_back(part);
  if (!text.empty() && text.back() == ':') parts.push_back("");
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty())
    return fail("bad --volume", text, 0, "expected NAME:/path or NAME:/path:ro");
  VolumeOption v{parts[0], parts[1], false};
  if (parts.size() == 3) {
    if (parts[2] == "ro")
      v.read_only = true;
    else if (parts[2] != "rw")
      return fail("bad --volume", text, 0, "the mode after the path is 'ro' or 'rw'");
  }
  return v;
}

Result<double> parse_positive(const std::string& option, const std::string& text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value) || value <= 0)
    return fail("bad --" + option, text, 0, "expected a positive number");
  return value;
}

Result<unsigned> parse_id(const std::string& text, const std::string& all) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size())
    return fail("bad --user", all, 0, "expected numeric UID or UID:GID, e.g. 1000:1000");
  return value;
}

Status parse_sandbox_options(const po::variables_map& vm, SandboxOptions* sb) {
  if (vm.count("user")) {
    if (auto s = parse_user(vm["user"].as<std::string>(), sb); !s) return s;
  }
  if (vm.count("cap-add")) sb->cap_add = vm["cap-add"].as<std::vector<std::string>>();
  if (vm.count("cap-drop")) sb->cap_drop = vm["cap-drop"].as<std::vector<std::string>>();
  if (auto caps = step_capabilities(sb->cap_add, sb->cap_drop); !caps)
    return tl::unexpected(caps.error());
  if (vm.count("rootfs")) {
    sb->rootfs = vm["rootfs"].as<std::string>();
    if (sb->rootfs->empty() || sb->rootfs->front() != '/')
      return fail("bad --rootfs", *sb->rootfs, 0, "give an absolute directory");
  }
  if (vm.count("dev")) {
    auto dev = vm["dev"].as<std::string>();
    if (dev != "minimal" && dev != "host")
      return fail("bad --dev", dev, 0, "expected minimal or host");
    sb->host_dev = dev == "host";
  }
  return {};
}

}  // namespace

Status parse_user(const std::string& text, SandboxOptions* sb) {
  auto colon = text.find(':');
  auto uid = parse_id(text.substr(0, colon), text);
  if (!uid) return tl::unexpected(uid.error());
  auto gid = colon == std::string::npos ? uid : parse_id(text.substr(colon + 1), text);
  if (!gid) return tl::unexpected(gid.error());
  sb->uid = *uid;
  sb->gid = *gid;
  return {};
}

Result<std::uint64_t> parse_bytes(const std::string& text) {
  auto bytes = parse_size(text);
  if (!bytes) return fail("bad --memory", text, 0, "expected BYTES, optionally with K, M, G or T");
  return *bytes;
}

Result<ExecOptions> parse_exec_options(const std::vector<std::string>& args) {
  ExecOptions o;
  // Everything after the first "--" is the command, untouched: its own
  // options must never be read as runner's.
  std::vector<std::string> own;
  bool in_command = false;
  for (const auto& a : args) {
    if (in_command)
      o.command.push_back(a);
    else if (a == "--")
      in_command = true;
    else
      own.push_back(a);
  }

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(own).options(exec_description()).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return usage(e.what(), "see runner exec --help");
  }
  if (vm.count("help")) {
    o.help = true;
    return o;
  }

  o.no_agent = vm.count("no-agent") > 0;
  if (vm.count("agent")) {
    if (o.no_agent) return usage("--agent and --no-agent exclude each other");
    o.agent_socket = vm["agent"].as<std::string>();
  }

  auto name = [&](const char* key, std::string* out, const std::string& no_agent_default) {
    if (vm.count(key))
      *out = vm[key].as<std::string>();
    else if (o.no_agent)
      *out = no_agent_default;
    else
      return false;
    return true;
  };
  // Without the agent nothing is recorded under these names, so a debugging
  // user may leave them out; the run defaults to runner's pid so that two
  // debugging runs never share a cgroup.
  if (!name("pipeline", &o.pipeline, "no-agent")) return usage("missing --pipeline P");
  if (!name("run", &o.run, "pid" + std::to_string(::getpid()))) return usage("missing --run R");
  if (!name("step", &o.step, "step")) return usage("missing --step S");
  for (auto [key, value] :
       {std::pair{"pipeline", &o.pipeline}, std::pair{"run", &o.run}, std::pair{"step", &o.step}}) {
    if (!is_valid_name(*value))
      return fail(std::string("bad --") + key, "'" + *value + "'", 0, std::string(kNameRule));
  }

  if (vm.count("volume")) {
    for (const auto& text : vm["volume"].as<std::vector<std::string>>()) {
      auto v = parse_volume(text);
      if (!v) return tl::unexpected(v.error());
      if (o.no_agent) {
        if (v->name.front() != '/')
          return fail("bad --volume", text, 0,
                      "with --no-agent the volume is an absolute host directory");
      } else if (!is_valid_name(v->name)) {
        return fail("bad --volume", text, 0, std::string(kNameRule));
      }
      o.volumes.push_back(std::move(*v));
    }
  }

  if (vm.count("clone-from")) {
    if (o.no_agent) return usage("--clone-from needs the agent; drop it with --no-agent");
    for (const auto& text : vm["clone-from"].as<std::vector<std::string>>()) {
      auto eq = text.find('=');
      std::string volume = eq == std::string::npos ? "" : text.substr(0, eq);
      std::string snapshot = eq == std::string::npos ? "" : text.substr(eq + 1);
      if (!is_valid_name(volume) || !is_valid_name(snapshot))
        return fail("bad --clone-from", text, 0,
                    "expected VOLUME=SNAPSHOT; " + std::string(kNameRule));
      bool mounted = false;
      for (const auto& v : o.volumes) mounted |= v.name == volume;
      if (!mounted)
        return fail("bad --clone-from", text, 0, "no --volume " + volume + ":/path to clone for");
      o.clone_from[volume] = snapshot;
    }
  }

  if (vm.count("workdir")) o.workdir = vm["workdir"].as<std::string>();
  if (vm.count("env-file")) {
    for (const auto& file : vm["env-file"].as<std::vector<std::string>>()) {
      auto lines = read_env_file(file);
      if (!lines) return tl::unexpected(lines.error());
      o.env.insert(o.env.end(), lines->begin(), lines->end());
    }
  }
  if (vm.count("env")) {
    for (const auto& text : vm["env"].as<std::vector<std::string>>()) {
      auto eq = text.find('=');
      if (eq == 0 || eq == std::string::npos) return fail("bad --env", text, 0, "expected K=V");
      o.env.emplace_back(text.substr(0, eq), text.substr(eq + 1));
    }
  }
  if (auto s = parse_sandbox_options(vm, &o.sandbox); !s) return tl::unexpected(s.error());
  o.hostname = vm.count("hostname") ? vm["hostname"].as<std::string>() : o.step;
  if (o.hostname.empty() || o.hostname.size() > 64)
    return fail("bad --hostname", o.hostname, 0, "1 to 64 characters");

  if (vm.count("net")) {
    auto net = vm["net"].as<std::string>();
    if (net == "none")
      o.net = NetMode::none;
    else if (net == "host")
      o.net = NetMode::host;
    else
      return fail("bad --net", net, 0, "expected none or host");
  }
  if (vm.count("memory")) {
    auto bytes = parse_bytes(vm["memory"].as<std::string>());
    if (!bytes) return tl::unexpected(bytes.error());
    o.memory_bytes = *bytes;
  }
  if (vm.count("cpus")) {
    auto cpus = parse_positive("cpus", vm["cpus"].as<std::string>());
    if (!cpus) return tl::unexpected(cpus.error());
    o.cpus = *cpus;
  }
  if (vm.count("timeout")) {
    auto t = parse_positive("timeout", vm["timeout"].as<std::string>());
    if (!t) return tl::unexpected(t.error());
    o.timeout_seconds = *t;
  }
  if (vm.count("snapshots")) {
    auto s = vm["snapshots"].as<std::string>();
    if (s == "pre,post" || s == "post,pre")
      o.snapshots = {true, true};
    else if (s == "pre")
      o.snapshots = {true, false};
    else if (s == "post")
      o.snapshots = {false, true};
    else if (s == "none")
      o.snapshots = {false, false};
    else
      return fail("bad --snapshots", s, 0, "expected pre,post, pre, post or none");
  }
  if (vm.count("kfp-ui-metadata")) {
    if (o.no_agent)
      return usage(
          "--kfp-ui-metadata needs the agent (it names the step's snapshots); drop it "
          "with --no-agent");
    o.kfp_ui_metadata = vm["kfp-ui-metadata"].as<std::string>();
    if (auto s = check_output_path("kfp-ui-metadata", o.kfp_ui_metadata); !s)
      return tl::unexpected(s.error());
  }
  if (vm.count("view-url")) {
    o.view_url = vm["view-url"].as<std::string>();
    if (o.view_url.rfind("http://", 0) != 0 && o.view_url.rfind("https://", 0) != 0)
      return fail("bad --view-url", o.view_url, 0, "expected http://HOST:PORT or https://...");
  }
  if (vm.count("marshal")) {
    o.marshal = vm["marshal"].as<std::string>();
    if (o.marshal.empty()) return fail("bad --marshal", "''", 0, "give a directory");
  }

  if (o.command.empty()) return usage("missing command", "give it after '--'");
  return o;
}

std::string exec_help() {
  std::ostringstream out;
  out << "usage: runner exec [--agent SOCKET] --pipeline P --run R --step S\n"
         "                   [--volume NAME:/path[:ro]]... [--workdir DIR]\n"
         "                   [--env K=V]... [--env-file FILE]... [--user UID[:GID]]\n"
         "                   [--cap-add CAP]... [--cap-drop CAP]... [--rootfs DIR]\n"
         "                   [--dev minimal|host] [--hostname H] [--net none|host]\n"
         "                   [--memory BYTES] [--cpus N] [--timeout SECONDS]\n"
         "                   [--snapshots pre,post|pre|post|none] [--marshal DIR]\n"
         "                   [--clone-from VOLUME=SNAPSHOT]... [--no-agent] -- CMD [ARGS...]\n"
         "\n"
         "Runs CMD as one pipeline step: in new mount, pid, uts and ipc namespaces (and a\n"
         "new network namespace unless --net host), inside the cgroup\n"
         "stepsnap/P/R/S from its first instruction, with this run's clone of each volume\n"
         "mounted at its path, a fresh /proc, and the marshal folder created. CMD is pid 2\n"
         "of its namespace under a minimal init (pid 1) that reaps orphans, in a session\n"
         "and cgroup namespace of its own. stdin, stdout and stderr are passed through;\n"
         "SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH go to CMD.\n"
         "\n"
         "The sandbox (docs/security.md): the step's root is the host's / (or --rootfs)\n"
         "read-only, with its clones mounted read-write at their paths, its own /tmp and\n"
         "/run, a minimal /dev, read-only /sys and /proc/sys; stepsnapd's socket and the\n"
         "pool's devices are not there. CMD runs as root by default, because clones and\n"
         "notebook folders hold root's files and images expect root, but with only\n"
         "containerd's default capabilities (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,\n"
         "SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD,\n"
         "AUDIT_WRITE, SETFCAP); --user runs it as another uid with none. Always:\n"
         "no_new_privs, a seccomp filter that fails mount, namespaces, bpf, perf, module\n"
         "loading, keyrings and the rest of Docker's deny list with EPERM (--cap-add\n"
         "SYS_ADMIN allows mounts and namespaces again), no descriptor but 0, 1 and 2, and\n"
         "an environment of PATH, TERM, LANG, LANGUAGE, LC_*, TZ from runner's, HOME, and\n"
         "--env-file and --env (a later one wins).\n"
         "\n"
         "With the agent (stepsnapd), each volume is this run's clone of it, made on the\n"
         "run's first use from the volume's newest snapshot (or --clone-from) and reused\n"
         "by the run's later steps. The agent holds CMD at its first exec, snapshots every\n"
         "volume (pre), lets it run, and snapshots them again once every process of the\n"
         "step is gone (post); runner returns after the post-snapshot is taken.\n"
         "\n"
         "--no-agent: no stepsnapd, no clones, NO SNAPSHOTS. A volume is then\n"
         "HOSTDIR:/path[:ro] and the host directory itself is bind-mounted; --pipeline,\n"
         "--run and --step may be left out.\n"
         "\n"
         "Exit status: CMD's own, or 128+N when CMD died of signal N;\n"
         "  124 the step ran out of --timeout and was killed, with every process it made;\n"
         "  125 runner itself failed (bad option, not root, no cgroup v2, agent not\n"
         "      running, volume or mount error, pre-snapshot failed): the step never ran;\n"
         "  126 CMD could not be executed; 127 CMD was not found.\n"
         "\n"
      << exec_description();
  return out.str();
}

std::string runner_help() {
  return "usage: runner exec [options] -- CMD [ARGS...]\n"
         "       runner pipeline run FILE [options]\n"
         "       runner exec --help | runner pipeline run --help\n"
         "\n"
         "runner launches stepsnap pipeline steps in fresh namespaces with their volumes:\n"
         "  exec          one step (a pipeline engine's step entrypoint)\n"
         "  pipeline run  a whole pipeline file as one run: initial snapshots, per-run\n"
         "                clones, every step with pre/post snapshots, restore from a step\n";
}

}  // namespace stepsnap::runner
