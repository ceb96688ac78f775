// stepsnap-csi's command line. Parsing and validation only; main() acts on it.
#pragma once

#include <string>
#include <variant>

#include "common/error.h"

namespace stepsnap::csi {

struct CsiOptions {
  std::string endpoint;  // the socket's path, from unix:///PATH
  std::string agent_socket = "/run/stepsnap/stepsnapd.sock";
  std::string node_id;
  std::string kubelet_dir = "/var/lib/kubelet";  // lexically normal, no trailing /
  std::string log_level = "info";
};

struct HelpRequested {
  std::string text;
};

// "unix:///csi/csi.sock" or "unix:/csi/csi.sock" -> "/csi/csi.sock"; the
// kubelet and the sidecars only speak Unix sockets to a node plugin.
Result<std::string> parse_endpoint(const std::string& endpoint);

Result<std::variant<CsiOptions, HelpRequested>> parse_csi_options(int argc,
                                                                  const char* const* argv);

}  // namespace stepsnap::csi
