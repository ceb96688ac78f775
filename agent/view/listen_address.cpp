#include "agent/view/listen_address.h"

#include <arpa/inet.h>

#include <cerrno>
#include <charconv>

namespace stepsnap::agent {

std::string ListenAddress::text() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

Result<std::optional<ListenAddress>> parse_listen_address(std::string_view text) {
  if (text.empty()) return std::optional<ListenAddress>{};
  const std::string what(text);
  const char* form = "expected HOST:PORT such as 127.0.0.1:9477 or [::1]:9477, or \"\" for off";
  ListenAddress a;
  std::string_view port_text;
  if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return fail("--http-listen", what, 0, form);
    a.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon)
      return fail("--http-listen", what, 0, form);
    a.host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  int port = -1;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port < 0 || port > 65535)
    return fail("--http-listen", what, 0, "the port is a number from 0 to 65535");
  a.port = port;
  in_addr v4{};
  in6_addr v6{};
  if (a.host == "localhost") {
    a.host = "127.0.0.1";
    a.loopback = true;
  } else if (::inet_pton(AF_INET, a.host.c_str(), &v4) == 1) {
    a.loopback = (ntohl(v4.s_addr) >> 24) == 127;
  } else if (::inet_pton(AF_INET6, a.host.c_str(), &v6) == 1) {
    a.loopback = IN6_IS_ADDR_LOOPBACK(&v6);
  } else {
    return fail("--http-listen", what, 0,
                "the host is an IP address (127.0.0.1, ::1, 0.0.0.0, ...) or localhost");
  }
  return std::optional<ListenAddress>{a};
}

}  // namespace stepsnap::agent
