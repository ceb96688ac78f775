#include "runner/exec/agent_client.h"

#include <sys/stat.h>

#include <cerrno>

#include "runner/exec/stepsnapd_client.h"

namespace stepsnap::runner {

Result<VolumeSource> NoAgentClient::ensure_run_clone(const StepRef&, const std::string& volume,
                                                     const std::optional<std::string>&) {
  struct stat st {};
  if (::stat(volume.c_str(), &st) != 0) return fail_errno("find volume directory", volume);
  if (!S_ISDIR(st.st_mode)) return fail("use volume", volume, ENOTDIR);
  return VolumeSource{volume, false};
}

Result<std::unique_ptr<AgentClient>> connect_agent(const ExecOptions& options) {
  if (options.no_agent) return std::make_unique<NoAgentClient>();
  auto client = StepsnapdClient::connect(options.agent_socket);
  if (!client) {
    auto e = client.error();
    if (e.err == ENOENT || e.err == ECONNREFUSED)
      e.detail = "is stepsnapd running? --no-agent runs without it, and without snapshots";
    return tl::unexpected(e);
  }
  return std::unique_ptr<AgentClient>(std::move(*client));
}

}  // namespace stepsnap::runner
