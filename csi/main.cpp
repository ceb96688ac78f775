// stepsnap-csi: the CSI driver of stepsnap volumes and snapshots, beside
// stepsnapd on each node. See docs/kubernetes.md.
#include <iostream>

#include "common/log.h"
#include "common/stop_signals.h"
#include "csi/csi_server.h"
#include "csi/options.h"

int main(int argc, char** argv) {
  auto parsed = stepsnap::csi::parse_csi_options(argc, argv);
  if (!parsed) {
    std::cerr << "stepsnap-csi: " << parsed.error().message() << " (see stepsnap-csi --help)\n";
    return 2;
  }
  if (auto* help = std::get_if<stepsnap::csi::HelpRequested>(&*parsed)) {
    std::cout << help->text;
    return 0;
  }
  const auto& options = std::get<stepsnap::csi::CsiOptions>(*parsed);
  stepsnap::log::Level level = stepsnap::log::Level::info;
  stepsnap::log::parse_level(options.log_level, &level);
  stepsnap::log::set_level(level);

  // Before gRPC starts its threads, so every one inherits the mask.
  const stepsnap::StopSignals stop;

  auto server = stepsnap::csi::CsiServer::start(options);
  if (!server) {
    std::cerr << "stepsnap-csi: cannot start: " << server.error().message() << "\n";
    return 1;
  }
  stepsnap::log::info(std::string("stepsnap-csi: ") + stop.wait() + ", stopping");
  (*server)->stop();
  return 0;
}
