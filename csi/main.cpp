// stepsnap-csi: the CSI driver of stepsnap volumes and snapshots, beside
// stepsnapd on each node. See docs/kubernetes.md.
#include <signal.h>

#include <iostream>

#include "common/log.h"
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

  // Blocked before gRPC starts its threads, so every thread inherits the
  // mask and the main thread alone takes the signal with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto server = stepsnap::csi::CsiServer::start(options);
  if (!server) {
    std::cerr << "stepsnap-csi: cannot start: " << server.error().message() << "\n";
    return 1;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  stepsnap::log::info(std::string("stepsnap-csi: ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                      ", stopping");
  (*server)->stop();
  return 0;
}
