// stepsnapd: the stepsnap node agent. See docs/agent.md.
#include <cstdio>
#include <iostream>

#include "agent/daemon/daemon.h"
#include "agent/daemon/options.h"
#include "agent/daemon/sd_notify.h"
#include "common/log.h"
#include "common/stop_signals.h"

using namespace stepsnap;

int main(int argc, char** argv) {
  auto parsed = agent::parse_daemon_options(argc, argv);
  if (!parsed) {
    std::cerr << "stepsnapd: " << parsed.error().message() << " (see stepsnapd --help)\n";
    return 2;
  }
  if (auto* help = std::get_if<agent::HelpRequested>(&*parsed)) {
    std::cout << help->text;
    return 0;
  }
  const auto& options = std::get<agent::DaemonOptions>(*parsed);
  log::set_level(options.log_level);

  // Before the daemon starts its threads, so every one inherits the mask.
  const StopSignals stop;

  auto daemon = agent::Daemon::start(options);
  if (!daemon) {
    log::error("stepsnapd: cannot start: " + daemon.error().message());
    return 1;
  }
  if (auto r = agent::sd_notify("READY=1\nSTATUS=serving " + options.socket_path); !r) {
    log::warn(r.error().message());
  }
  log::info(std::string("stepsnapd: ") + stop.wait() + ", stopping");
  (void)agent::sd_notify("STOPPING=1");
  (*daemon)->stop();
  return 0;
}
