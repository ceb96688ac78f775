#include "agent/volumes/mkfs.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "common/text.h"
#include "common/unique_fd.h"

extern char** environ;

namespace stepsnap::agent {

namespace {

// Runs argv, returns its exit status and what it wrote to stdout and stderr.
Result<std::pair<int, std::string>> run_tool(const std::vector<std::string>& argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("run", argv[0]);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  write_end.reset();
  if (rc != 0) {
    return fail("run", argv[0], rc, rc == ENOENT ? "install e2fsprogs or xfsprogs" : std::string());
  }
  std::string output;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    output.append(buf, static_cast<std::size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return std::pair{status, output};
}

}  // namespace

Status make_filesystem(const std::string& device, const std::string& fs) {
  std::vector<std::string> argv;
  if (fs == "ext4") {
    // No lazy init: the kernel would zero inode tables in the background,
    // writing into the pool long after the volume was "made".
    argv = {"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", device};
  } else if (fs == "xfs") {
    argv = {"mkfs.xfs", "-q", "-f", device};
  } else {
    return fail("make filesystem on", device, EINVAL, "\"" + fs + "\" is not ext4 or xfs");
  }
  auto r = run_tool(argv);
  if (!r) return tl::unexpected(r.error());
  const auto& [status, output] = *r;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  std::string how = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                      : "killed by signal " + std::to_string(WTERMSIG(status));
  std::string said = last_line(output);
  return fail(argv[0], device, 0, how + (said.empty() ? "" : ": " + said));
}

}  // namespace stepsnap::agent
