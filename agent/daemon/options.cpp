#include "agent/daemon/options.h"

#include <boost/program_options.hpp>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>

#include "common/duration.h"
#include "common/names.h"

namespace stepsnap::agent {

namespace po = boost::program_options;

namespace {

// "--flag: what is wrong; what to do": errno text would add nothing here.
tl::unexpected<Error> flag_error(const std::string& flag, const std::string& what) {
  return fail("--" + flag, "", 0, what);
}

// The flags validate() reads as text (see its checks).
struct TextFlags {
  std::string log_level, block, loop_data, loop_meta, hold, lease;
  std::vector<std::string> retention;
  std::string gc_interval = "1h";
};

po::options_description describe(DaemonOptions& o, TextFlags& t) {
  std::string& log_level = t.log_level;
  std::string& block = t.block;
  std::string& loop_data = t.loop_data;
  std::string& loop_meta = t.loop_meta;
  std::string& hold = t.hold;
  std::string& lease = t.lease;
  po::options_description general("General");
  general.add_options()("help,h", "print this help and exit")(
      "config,c", po::value(&o.config_file)->value_name("FILE"),
      "read settings from an INI file (keys are the long flag names without \"--\"); flags "
      "given on the command line win")(
      "state-dir", po::value(&o.state_dir)->value_name("DIR")->default_value(o.state_dir),
      "where the catalog (catalog.db, SQLite) lives; must be on a local file system")(
      "socket", po::value(&o.socket_path)->value_name("PATH")->default_value(o.socket_path),
      "the API socket (newline-delimited JSON, see docs/api.md)")(
      "socket-group",
      po::value(&o.socket_group)->value_name("GROUP")->default_value(o.socket_group),
      "group allowed to use the socket besides root; \"\" for root only")(
      "event-log", po::value(&o.event_log_file)->value_name("FILE"),
      "also append every event as one JSON line to FILE (the catalog stays the record)")(
      "event-retention", po::value(&o.event_retention)->default_value(o.event_retention),
      "how many of the newest events to keep for subscribers resuming with since=N")(
      "hold-timeout",
      // A string, checked by validate(): Boost would read "-5" as a huge
      // unsigned number and the error would name the wrong value.
      po::value(&hold)->value_name("SECONDS")->default_value(
          std::to_string(o.hold_timeout_seconds)),
      "how long a step's first exec may be held for its pre-snapshot (1 to 86400); when it runs "
      "out the step is killed, since it would run without its pre-snapshot")(
      "step-lease",
      po::value(&lease)->value_name("SECONDS")->default_value(std::to_string(o.step_lease_seconds)),
      "how long a registered step's cgroup may stay without a process (1 to 86400); then the "
      "registration expires (an error event, op step.expire) and its name is free again")(
      "step-cgroup-root", po::value(&o.step_cgroup_root)->value_name("DIR"),
      "the cgroup v2 directory step cgroups (and pods) must be beneath, instead of "
      "<cgroup v2 mount>/stepsnap; on a Kubernetes node the kubelet's pods' cgroup, e.g. "
      "/sys/fs/cgroup/kubepods.slice")(
      "bpf-pin-dir", po::value(&o.bpf_pin_dir)->value_name("DIR")->default_value(o.bpf_pin_dir),
      "where the step tracer's BPF programs and maps are pinned (a bpffs directory), so a held "
      "step stays held across an agent restart and steps under way are taken over; \"\" pins "
      "nothing (a restart then fails the steps under way)")(
      "log-level", po::value(&log_level)->value_name("LEVEL")->default_value("info"),
      "debug, info, warn or error (logs go to stderr)")(
      "request-timeout",
      po::value(&o.request_timeout_seconds)
          ->value_name("SECONDS")
          ->default_value(o.request_timeout_seconds),
      "a request line must arrive whole within this time; non-root connections idle longer "
      "between requests are closed")(
      "max-connections-per-uid",
      po::value(&o.max_connections_per_uid)->default_value(o.max_connections_per_uid),
      "connections one non-root uid may hold open (of 64; 8 more are kept for root)")(
      "max-steps-per-peer", po::value(&o.max_steps_per_peer)->default_value(o.max_steps_per_peer),
      "steps one uid may have registered and not yet over")(
      "http-listen",
      po::value(&o.http_listen)->value_name("ADDR:PORT")->default_value(o.http_listen),
      "serve the read-only web view, JSON API, /events and /metrics there (docs/ui.md); \"\" "
      "turns it off. It has no authentication: an address other than loopback is served only "
      "when spelled out, with a warning");
  po::options_description pool("Thin pool (give devices, or loop files for development)");
  pool.add_options()("pool-name", po::value(&o.pool.name)->default_value(o.pool.name),
                     "device-mapper name of the pool; also prefixes its thin devices")(
      "pool-data-device", po::value(&o.pool.data_device)->value_name("DEV"),
      "block device for the pool's data")(
      "pool-metadata-device", po::value(&o.pool.metadata_device)->value_name("DEV"),
      "block device for the pool's metadata (about 1% of data, at least 2M)")(
      "pool-loop-dir", po::value(&o.pool.loop_dir)->value_name("DIR"),
      "make the pool on sparse loop files in DIR instead of devices")(
      "pool-loop-data-size", po::value(&loop_data)->value_name("SIZE"),
      "size of the data loop file, e.g. 20G")("pool-loop-metadata-size",
                                              po::value(&loop_meta)->value_name("SIZE"),
                                              "size of the metadata loop file, e.g. 256M")(
      "pool-block-size", po::value(&block)->value_name("SIZE")->default_value("64K"),
      "copy-on-write block size: 64K to 1G, a multiple of 64K (small blocks make the first "
      "write after a snapshot cheap, large ones make metadata small)")(
      "pool-low-space-percent",
      po::value(&o.pool.low_space_percent)->default_value(o.pool.low_space_percent),
      "emit pool.low_space when data or metadata use passes this percentage")(
      "format-pool", po::bool_switch(&o.format_pool),
      "format the metadata device even if it already holds a thin pool, destroying every volume "
      "on it (refused without this flag; command line only)");
  po::options_description retention("Retention (docs/retention.md)");
  retention.add_options()(
      "retention", po::value(&t.retention)->value_name("RULE"),
      "a pipeline's rule: \"PIPELINE [keep-runs=N] [keep-failed-runs=N] [max-age=DURATION] "
      "[keep=LABEL]...\"; PIPELINE * is the rule of pipelines without their own; repeat for "
      "more pipelines (in a config file: one retention = ... line each). Rules set over the API "
      "(retention.set) replace these per pipeline")(
      "gc-interval",
      po::value(&t.gc_interval)->value_name("DURATION")->default_value(t.gc_interval),
      "how often the retention sweep runs on its own (e.g. 30m, 1h, 1d); 0 turns the timer off "
      "(it still runs on demand, stepsnapctl gc, and when the pool runs low on space)");
  po::options_description all(
      "stepsnapd: the stepsnap node agent. Owns a device-mapper thin pool, snapshots step\n"
      "volumes at process boundaries, and serves the API on a Unix socket.\n"
      "Runs in the foreground as root.\n\nUsage: stepsnapd [options]\n");
  all.add(general).add(pool).add(retention);
  return all;
}

Status validate_retention(DaemonOptions& o, const TextFlags& t) {
  for (const auto& text : t.retention) {
    auto rule = parse_rule_text(text);
    if (!rule) return flag_error("retention", "\"" + text + "\": " + rule.error().detail);
    if (!o.retention.emplace(rule->pipeline, rule->rule).second) {
      return flag_error("retention", "pipeline " + rule->pipeline +
                                         " has two rules; give each pipeline one --retention");
    }
  }
  auto interval = parse_duration_seconds(t.gc_interval);
  if (!interval) {
    return flag_error("gc-interval",
                      "\"" + t.gc_interval + "\" is not a duration such as 30m, 1h or 1d (0: off)");
  }
  o.gc_interval_seconds = *interval;
  return {};
}

Status validate(DaemonOptions& o, const TextFlags& t) {
  const std::string& log_level = t.log_level;
  const std::string& block = t.block;
  const std::string& loop_data = t.loop_data;
  const std::string& loop_meta = t.loop_meta;
  const std::string& hold = t.hold;
  const std::string& lease = t.lease;
  if (auto r = validate_retention(o, t); !r) return r;
  if (!log::parse_level(log_level, &o.log_level)) {
    return flag_error("log-level",
                      "\"" + log_level + "\" is not a level; use debug, info, warn or error");
  }
  if (o.state_dir.empty() || o.state_dir[0] != '/') {
    return flag_error(
        "state-dir",
        "\"" + o.state_dir + "\" is not an absolute path; give one like /var/lib/stepsnap");
  }
  if (o.socket_path.empty() || o.socket_path[0] != '/') {
    return flag_error("socket",
                      "\"" + o.socket_path +
                          "\" is not an absolute path; give one like /run/stepsnap/stepsnapd.sock");
  }
  if (o.socket_path.size() > 107) {
    return flag_error("socket", "path is " + std::to_string(o.socket_path.size()) +
                                    " bytes; Unix sockets allow 107; choose a shorter one");
  }
  if (!o.event_log_file.empty() && o.event_log_file[0] != '/') {
    return flag_error("event-log", "\"" + o.event_log_file + "\" is not an absolute path");
  }
  {
    auto http = parse_listen_address(o.http_listen);
    if (!http) return tl::unexpected(http.error());
    o.http = *http;
  }
  if (o.event_retention == 0) {
    return flag_error("event-retention",
                      "must be at least 1; subscribers need something to resume from");
  }
  {
    std::uint64_t seconds = 0;
    auto [end, ec] = std::from_chars(hold.data(), hold.data() + hold.size(), seconds);
    if (hold.empty() || ec != std::errc() || end != hold.data() + hold.size() ||
        seconds < kMinHoldTimeoutSeconds || seconds > kMaxHoldTimeoutSeconds) {
      return flag_error("hold-timeout",
                        "\"" + hold + "\" is not a whole number of seconds from 1 to 86400");
    }
    o.hold_timeout_seconds = seconds;
  }
  {
    std::uint64_t seconds = 0;
    auto [end, ec] = std::from_chars(lease.data(), lease.data() + lease.size(), seconds);
    if (lease.empty() || ec != std::errc() || end != lease.data() + lease.size() ||
        seconds < kMinStepLeaseSeconds || seconds > kMaxStepLeaseSeconds) {
      return flag_error("step-lease",
                        "\"" + lease + "\" is not a whole number of seconds from 1 to 86400");
    }
    o.step_lease_seconds = seconds;
  }
  if (!o.step_cgroup_root.empty()) {
    // The agent kills what is in a step's cgroup: the root is spelled out
    // whole, never a relative or dotted path that could mean more.
    const std::string& r = o.step_cgroup_root;
    bool dotted = r.find("/./") != std::string::npos || r.find("/../") != std::string::npos ||
                  r.ends_with("/.") || r.ends_with("/..");
    if (r[0] != '/' || dotted || r == "/")
      return flag_error("step-cgroup-root",
                        "\"" + r + "\" is not an absolute cgroup directory without . or ..");
    while (o.step_cgroup_root.size() > 1 && o.step_cgroup_root.ends_with('/'))
      o.step_cgroup_root.pop_back();
  }
  if (auto problem = name_problem(o.pool.name)) {
    return flag_error("pool-name",
                      "\"" + o.pool.name + "\" " + *problem + "; " + std::string(kNameRule));
  }
  auto b = parse_size(block);
  constexpr std::uint64_t k64 = 64 * 1024;
  if (!b || *b % k64 != 0 || *b < k64 || *b > (1ull << 30)) {
    return flag_error("pool-block-size",
                      "\"" + block + "\" is not 64K to 1G in steps of 64K (dm-thin's limits)");
  }
  o.pool.block_bytes = *b;
  if (o.request_timeout_seconds < 1 || o.request_timeout_seconds > 86400) {
    return flag_error("request-timeout", std::to_string(o.request_timeout_seconds) +
                                             " is not a whole number of seconds from 1 to 86400");
  }
  if (o.max_connections_per_uid < 1 || o.max_connections_per_uid > 56) {
    return flag_error("max-connections-per-uid",
                      std::to_string(o.max_connections_per_uid) +
                          " is not from 1 to 56 (64 connections, 8 of them kept for root)");
  }
  if (o.max_steps_per_peer < 1) {
    return flag_error("max-steps-per-peer", "must be at least 1");
  }
  if (o.pool.low_space_percent < 1 || o.pool.low_space_percent > 99) {
    return flag_error("pool-low-space-percent",
                      std::to_string(o.pool.low_space_percent) + " is not between 1 and 99");
  }

  const bool devices = !o.pool.data_device.empty() || !o.pool.metadata_device.empty();
  const bool loops = !o.pool.loop_dir.empty() || !loop_data.empty() || !loop_meta.empty();
  if (devices && loops) {
    return flag_error("pool-loop-dir", "give either pool devices or loop files, not both");
  }
  if (!devices && !loops) {
    return flag_error("pool-data-device",
                      "no pool given; give --pool-data-device and --pool-metadata-device, or "
                      "--pool-loop-dir with --pool-loop-data-size and --pool-loop-metadata-size");
  }
  if (devices) {
    if (o.pool.data_device.empty())
      return flag_error("pool-data-device", "missing; --pool-metadata-device needs it");
    if (o.pool.metadata_device.empty())
      return flag_error("pool-metadata-device", "missing; --pool-data-device needs it");
    if (o.pool.data_device == o.pool.metadata_device) {
      return flag_error("pool-metadata-device",
                        "is the same device as --pool-data-device; use two devices");
    }
    return {};
  }
  if (o.pool.loop_dir.empty() || o.pool.loop_dir[0] != '/') {
    return flag_error("pool-loop-dir",
                      "missing or not absolute; give a directory such as /var/lib/stepsnap/loop");
  }
  auto data = parse_size(loop_data);
  if (!data) {
    return flag_error("pool-loop-data-size",
                      "\"" + loop_data + "\" is not a size; use bytes or a K, M, G, T suffix");
  }
  auto meta = parse_size(loop_meta);
  if (!meta) {
    return flag_error("pool-loop-metadata-size",
                      "\"" + loop_meta + "\" is not a size; use bytes or a K, M, G, T suffix");
  }
  if (*meta < (2u << 20)) {
    return flag_error("pool-loop-metadata-size", "is under 2M, too small for thin pool metadata");
  }
  if (*data < o.pool.block_bytes) {
    return flag_error("pool-loop-data-size", "is smaller than one pool block");
  }
  o.pool.loop_data_bytes = *data;
  o.pool.loop_metadata_bytes = *meta;
  return {};
}

}  // namespace

Result<ParsedOptions> parse_daemon_options(int argc, const char* const* argv) {
  DaemonOptions o;
  TextFlags text;
  auto desc = describe(o, text);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help")) {
      std::ostringstream text;
      text << desc;
      return ParsedOptions(HelpRequested{text.str()});
    }
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      std::ifstream file(path);
      if (!file) {
        return flag_error("config",
                          "cannot read \"" + path + "\"; check the path and its permissions");
      }
      // Values already stored (the command line) are not overwritten.
      auto parsed = po::parse_config_file(file, desc, /*allow_unregistered=*/false);
      for (const auto& opt : parsed.options) {
        // Destroying a pool must be asked for on the command line of the
        // one start that does it, never left behind in a file for every
        // later start.
        if (opt.string_key == "format-pool") {
          return flag_error("format-pool",
                            "is not accepted in a config file (" + path +
                                "); give it on the command line of the one start that needs it");
        }
      }
      po::store(parsed, vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    // Boost's words already name the option ("unrecognised option '--x'").
    return tl::unexpected(fail(e.what(), "", 0, "see stepsnapd --help").value());
  }
  if (auto r = validate(o, text); !r) {
    return tl::unexpected(r.error());
  }
  return ParsedOptions(std::move(o));
}

}  // namespace stepsnap::agent
