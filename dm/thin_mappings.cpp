#include "dm/thin_mappings.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <optional>

#include "common/unique_fd.h"

extern char** environ;

namespace stepsnap::dm {
namespace {

// The value of attribute `name` inside one XML element's text.
std::optional<std::uint64_t> attribute(std::string_view element, std::string_view name) {
  std::string key = " " + std::string(name) + "=\"";
  auto at = element.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  at += key.size();
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(element.data() + at, element.data() + element.size(), value);
  if (ec != std::errc() || end == element.data() + at || *end != '"') return std::nullopt;
  return value;
}

Error bad_dump(const std::string& what) {
  return Error{"read thin_dump output", "", EBADMSG, what, {}};
}

}  // namespace

Result<std::vector<BlockMapping>> parse_thin_dump_mappings(std::string_view xml, ThinId id) {
  std::vector<BlockMapping> out;
  std::size_t pos = 0;
  bool in_device = false;
  bool found = false;
  while ((pos = xml.find('<', pos)) != std::string_view::npos) {
    auto close = xml.find('>', pos);
    if (close == std::string_view::npos) return tl::unexpected(bad_dump("an unclosed element"));
    std::string_view element = xml.substr(pos, close - pos + 1);
    pos = close + 1;
    if (element.starts_with("<device ")) {
      auto dev = attribute(element, "dev_id");
      if (!dev) return tl::unexpected(bad_dump("a device without dev_id"));
      in_device = *dev == id;
      found = found || in_device;
    } else if (element.starts_with("</device")) {
      in_device = false;
    } else if (in_device && element.starts_with("<range_mapping ")) {
      auto v = attribute(element, "origin_begin");
      auto d = attribute(element, "data_begin");
      auto n = attribute(element, "length");
      if (!v || !d || !n || *n == 0) return tl::unexpected(bad_dump("a malformed range_mapping"));
      out.push_back({*v, *d, *n});
    } else if (in_device && element.starts_with("<single_mapping ")) {
      auto v = attribute(element, "origin_block");
      auto d = attribute(element, "data_block");
      if (!v || !d) return tl::unexpected(bad_dump("a malformed single_mapping"));
      out.push_back({*v, *d, 1});
    }
  }
  if (!found) {
    return fail("read thin_dump output", "thin id " + std::to_string(id), ENODATA,
                "the pool's metadata has no such device");
  }
  std::sort(out.begin(), out.end(),
            [](const BlockMapping& a, const BlockMapping& b) { return a.virt < b.virt; });
  for (std::size_t i = 1; i < out.size(); ++i) {
    if (out[i].virt < out[i - 1].virt + out[i - 1].length) {
      return tl::unexpected(
          bad_dump("overlapping mappings at block " + std::to_string(out[i].virt)));
    }
  }
  return out;
}

namespace {

// A cursor over sorted mappings: at virtual block `at`, the mapping that
// covers it (if any) and where the next change of state is.
class Cursor {
 public:
  explicit Cursor(const std::vector<BlockMapping>& m) : m_(m) {}
  const BlockMapping* covering(std::uint64_t at) {
    while (i_ < m_.size() && m_[i_].virt + m_[i_].length <= at) ++i_;
    if (i_ < m_.size() && m_[i_].virt <= at) return &m_[i_];
    return nullptr;
  }
  // The first block after `at` where coverage changes.
  std::uint64_t next_boundary(std::uint64_t at) {
    const BlockMapping* c = covering(at);
    if (c) return c->virt + c->length;
    return i_ < m_.size() ? m_[i_].virt : UINT64_MAX;
  }

 private:
  const std::vector<BlockMapping>& m_;
  std::size_t i_ = 0;
};

}  // namespace

MappingDelta mapping_delta(const std::vector<BlockMapping>& target,
                           const std::vector<BlockMapping>& base) {
  MappingDelta delta;
  Cursor t(target), b(base);
  std::uint64_t at = 0;
  for (;;) {
    std::uint64_t end = std::min(t.next_boundary(at), b.next_boundary(at));
    if (end == UINT64_MAX) break;
    const BlockMapping* tm = t.covering(at);
    const BlockMapping* bm = b.covering(at);
    std::uint64_t length = end - at;
    if (tm && !(bm && tm->data - tm->virt == bm->data - bm->virt)) {
      std::uint64_t data = tm->data + (at - tm->virt);
      auto& c = delta.changed;
      if (!c.empty() && c.back().virt + c.back().length == at &&
          c.back().data + c.back().length == data) {
        c.back().length += length;
      } else {
        c.push_back({at, data, length});
      }
    } else if (!tm && bm) {
      auto& u = delta.unmapped;
      if (!u.empty() && u.back().begin + u.back().length == at) {
        u.back().length += length;
      } else {
        u.push_back({at, length});
      }
    }
    at = end;
  }
  return delta;
}

Result<std::vector<BlockMapping>> dump_thin_mappings(const std::string& metadata_device,
                                                     ThinId id) {
  const std::string tool = "thin_dump";
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("run", tool);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  // stderr to a memory file: read after exit, so a chatty tool can never
  // block on a pipe nobody drains.
  UniqueFd errors(::memfd_create("thin_dump-stderr", MFD_CLOEXEC));
  if (!errors) return fail_errno("run", tool);
  std::string dev_id = std::to_string(id);
  std::vector<std::string> argv = {tool, "--metadata-snap", "--dev-id", dev_id, metadata_device};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, errors.get(), 2);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, tool.c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  write_end.reset();
  if (rc != 0) {
    return fail("run", tool, rc, rc == ENOENT ? "install thin-provisioning-tools" : "");
  }
  std::string xml;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    xml.append(buf, static_cast<std::size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string said(4096, '\0');
    ssize_t n = ::pread(errors.get(), said.data(), said.size(), 0);
    said.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!said.empty() && (said.back() == '\n' || said.back() == ' ')) said.pop_back();
    if (auto nl = said.rfind('\n'); nl != std::string::npos) said = said.substr(nl + 1);
    return fail(tool + " --metadata-snap --dev-id " + dev_id, metadata_device, 0,
                (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                   : std::string("killed")) +
                    (said.empty() ? "" : ": " + said));
  }
  return parse_thin_dump_mappings(xml, id);
}

}  // namespace stepsnap::dm
