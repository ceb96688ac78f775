#include "runner/exec/kfp_metadata.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/unique_fd.h"

namespace stepsnap::runner {

namespace {

// Names follow the name rule ([A-Za-z0-9._-]); of those only '_' means
// something to markdown (emphasis).
std::string md_text(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '_' || c == '*' || c == '[' || c == ']' || c == '`' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string trimmed(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

}  // namespace

std::string kfp_ui_metadata(const StepRef& ref, const std::vector<std::string>& pre,
                            const std::vector<std::string>& post, const std::string& view_url) {
  const std::string base = trimmed(view_url);
  std::string md = "### stepsnap snapshots of step " + md_text(ref.step) + "\n\n";
  md += "Pipeline " + md_text(ref.pipeline) + ", run [" + md_text(ref.run) + "](" + base +
        "/runs/" + ref.pipeline + "/" + ref.run + ")\n\n";
  md += "| phase | snapshot |\n|---|---|\n";
  auto rows = [&](const char* phase, const std::vector<std::string>& names) {
    if (names.empty()) md += std::string("| ") + phase + " | none taken |\n";
    for (const auto& n : names)
      md += std::string("| ") + phase + " | [" + md_text(n) + "](" + base + "/snapshots/" + n +
            ") |\n";
  };
  rows("pre (before the step)", pre);
  rows("post (after the step)", post);
  nlohmann::json j = {{"outputs", {{{"type", "markdown"}, {"storage", "inline"}, {"source", md}}}}};
  return j.dump(2) + "\n";
}

Status check_output_path(const std::string& option, const std::string& path) {
  if (path.empty()) return fail("bad --" + option, "''", 0, "give a file path");
  auto dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    return fail("bad --" + option, path, errno, "its directory " + dir.string() + " must exist");
  if (!S_ISDIR(st.st_mode))
    return fail("bad --" + option, path, ENOTDIR, dir.string() + " is not a directory");
  return {};
}

Status write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return fail_errno("write", tmp);
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      Error e = fail_errno("write", tmp).value();
      ::unlink(tmp.c_str());
      return tl::unexpected(e);
    }
    done += static_cast<std::size_t>(n);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Error e = fail_errno("rename to", path).value();
    ::unlink(tmp.c_str());
    return tl::unexpected(e);
  }
  return {};
}

}  // namespace stepsnap::runner
