// The address stepsnapd's HTTP view listens on (--http-listen ADDR:PORT).
// Pure: parsed and classified here, bound by view_server.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace stepsnap::agent {

// Loopback, so nothing is exposed unless asked for. 9477: outside the ports
// development servers and Prometheus' own components default to (3000, 8000,
// 8080, 9090-9100), and below Linux's ephemeral range (32768+), so a client
// socket is never handed it before stepsnapd binds it.
inline constexpr std::string_view kDefaultHttpListen = "127.0.0.1:9477";

struct ListenAddress {
  std::string host;  // as given, without IPv6 brackets
  int port = 0;      // 0: any free port (tests)
  // 127.0.0.0/8, ::1 or "localhost": only this machine can connect.
  bool loopback = false;

  std::string text() const;
};

// "HOST:PORT" or "[IPv6]:PORT"; "" is nullopt (the view is off). A host that
// is not an IP address literal or "localhost" is refused: the daemon binds
// what the operator spelled, never the result of a name lookup.
Result<std::optional<ListenAddress>> parse_listen_address(std::string_view text);

}  // namespace stepsnap::agent
