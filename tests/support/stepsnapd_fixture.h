// A real stepsnapd for vm tests: each TEST gets its own daemon, loop-file
// pool, socket and temporary folder under /tmp, all removed afterwards.
// Runs only as root with dm-thin loaded (inside scripts/vm); skips otherwise.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "protocol/api_client.h"

namespace stepsnap::testing {

struct Output {
  int rc = -1;
  std::string out;
  std::string err;
};

// Runs a shell command; stdout and stderr captured separately.
Output sh(const std::string& cmd);
std::string read_file(const std::string& path);
bool exists(const std::string& path);

class StepsnapdFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Settings for SetUp's daemon; set them in the test's constructor.
  std::vector<std::string> extra_args_;  // flags after the fixed ones
  std::string data_size_ = "512M";
  bool long_pool_name_ = false;  // pad the pool's name to 63 bytes
  std::string socket_group_;     // --socket-group ("": root only)
  // Pin the step tracer (--bpf-pin-dir) in a directory of this test's own,
  // removed in TearDown; false: --bpf-pin-dir "" (nothing survives a stop).
  bool pin_bpf_ = true;
  // Replaces the loop-file pool flags (--pool-loop-dir and sizes), e.g. with
  // --pool-data-device and --pool-metadata-device.
  std::vector<std::string> pool_args_;
  // How long start_daemon waits for READY=1 (a bench's big catalog takes
  // its recovery longer than a test's).
  int ready_timeout_s_ = 60;

  std::string log_path() const { return dir_ + "/stepsnapd.log"; }
  // Starts stepsnapd and waits for READY=1 on our NOTIFY_SOCKET.
  void start_daemon();
  // Starts stepsnapd expecting it to refuse; returns its wait status.
  int start_daemon_expecting_failure();
  // Sends sig and reaps the daemon; returns its wait status.
  int stop_daemon(int sig);

  // The port the daemon's HTTP view listens on, from its log line
  // "HTTP view on http://ADDR:PORT/"; -1 when the view is off.
  int http_port() const;

  Output ctl(const std::string& args);
  // One connection per call, except step.register: registrations go over
  // one connection kept open until the daemon stops, as runner keeps its
  // own for a step (a registration is leased to its connection).
  nlohmann::json call(const std::string& op, const nlohmann::json& args);
  // call, expecting ok; returns the result.
  nlohmann::json ok(const std::string& op, const nlohmann::json& args);
  // Every event so far (follow=false); or only those of one type.
  std::vector<nlohmann::json> events();
  std::vector<nlohmann::json> events_of(const std::string& type);
  // Polls step.status until the step is finished or failed (120 s at most).
  nlohmann::json wait_step_over(const std::string& pipeline, const std::string& run,
                                const std::string& step);
  // Mounts dev at where (unmounted in TearDown).
  void mount(const std::string& dev, const std::string& where);
  // A writable clone of snapshot, mounted read-only at dir_/mnt/<name>;
  // returns the mount point.
  std::string mount_snapshot(const std::string& snapshot);
  // Creates an ext4 volume through the agent and writes files (path ->
  // contents) into it; returns its device path.
  std::string make_volume(const std::string& name,
                          const std::vector<std::pair<std::string, std::string>>& files);

  std::string dir_, pool_, socket_;
  std::string bpf_pins_;  // this test's --bpf-pin-dir
  pid_t pid_ = -1;

 private:
  // Forks stepsnapd with NOTIFY_SOCKET at notify; returns its pid.
  pid_t launch(const std::string& notify);

 protected:
  std::vector<std::string> mounts_;
  std::optional<protocol::ApiClient> registrar_;
};

}  // namespace stepsnap::testing
