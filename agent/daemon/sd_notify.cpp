#include "agent/daemon/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstdlib>
#include <cstring>

#include "common/unique_fd.h"

namespace stepsnap::agent {

Result<bool> sd_notify(const std::string& state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || *path == '\0') return false;
  std::string p(path);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (p.size() >= sizeof(addr.sun_path)) {
    return fail("notify systemd", p, ENAMETOOLONG, "NOTIFY_SOCKET path is too long");
  }
  if (p[0] != '/' && p[0] != '@') {
    return fail("notify systemd", p, EINVAL, "NOTIFY_SOCKET is neither a path nor @abstract");
  }
  std::memcpy(addr.sun_path, p.data(), p.size());
  if (p[0] == '@') addr.sun_path[0] = '\0';
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + p.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("notify systemd", "socket");
  if (::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
               reinterpret_cast<const sockaddr*>(&addr), len) < 0) {
    return fail_errno("notify systemd", p);
  }
  return true;
}

}  // namespace stepsnap::agent
