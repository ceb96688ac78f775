#include "runner/agent_client.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"

namespace stepsnap::runner {

Result<std::string> NoAgentClient::ensure_run_clone(const StepRef&, const std::string& volume) {
  struct stat st {};
  if (::stat(volume.c_str(), &st) != 0) return fail_errno("find volume directory", volume);
  if (!S_ISDIR(st.st_mode)) return fail("use volume", volume, ENOTDIR);
  return volume;
}

Result<std::unique_ptr<AgentClient>> connect_agent(const ExecOptions& options) {
  if (options.no_agent) return std::make_unique<NoAgentClient>();

  const std::string& path = options.agent_socket;
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path))
    return fail("connect to stepsnapd at", path, ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock) return fail_errno("open socket for stepsnapd at", path);
  if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    auto e = fail_errno("connect to stepsnapd at", path);
    e.value().detail = "is stepsnapd running? --no-agent runs without it, and without snapshots";
    return e;
  }
  return fail("talk to stepsnapd at", path, 0,
              "this runner has no stepsnapd client yet; use --no-agent (no snapshots)");
}

}  // namespace stepsnap::runner
