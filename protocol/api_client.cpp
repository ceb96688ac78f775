#include "protocol/api_client.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace stepsnap::protocol {

using json = nlohmann::json;

Result<ApiClient> ApiClient::connect(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return fail("cannot connect to stepsnapd at", path, ENAMETOOLONG);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("cannot connect to stepsnapd at", path);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    std::string hint =
        e == EACCES ? "are you root or in the socket's group?" : "is stepsnapd running?";
    return fail("cannot connect to stepsnapd at", path, e, hint);
  }
  return ApiClient(std::move(fd), path);
}

Status ApiClient::send(const std::string& op, const json& args, int pass_fd) {
  json req = {{"v", 1}, {"id", next_id_++}, {"op", op}};
  if (!args.is_null() && !args.empty()) req["args"] = args;
  std::string line = req.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::size_t off = 0;
  if (pass_fd >= 0) {
    // The descriptor rides on the line's first bytes.
    iovec iov{line.data(), line.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    ssize_t n;
    while ((n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
    }
    if (n < 0) return fail_errno("send to stepsnapd at", path_);
    off = static_cast<std::size_t>(n);
  }
  while (off < line.size()) {
    ssize_t n = ::send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("send to stepsnapd at", path_);
    }
    off += static_cast<std::size_t>(n);
  }
  return {};
}

Result<json> ApiClient::read() {
  for (;;) {
    auto nl = buffer_.find('\n', read_pos_);
    if (nl != std::string::npos) {
      // Lines are taken from read_pos_ on, and the buffer compacted once per
      // recv, not per line: a page of 1,000 events arrives in a few large
      // chunks, and moving the rest of a chunk after each line made reading
      // it quadratic.
      const char* line = buffer_.data() + read_pos_;
      const char* end = buffer_.data() + nl;
      read_pos_ = nl + 1;
      auto j = json::parse(line, end, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        return fail("read from stepsnapd at", path_, EPROTO, "answer is not a JSON object");
      }
      return j;
    }
    buffer_.erase(0, read_pos_);
    read_pos_ = 0;
    char chunk[65536];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("read from stepsnapd at", path_);
    }
    if (n == 0)
      return fail("read from stepsnapd at", path_, EPIPE, "the daemon closed the connection");
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

Result<json> ApiClient::call(const std::string& op, const json& args) {
  if (auto r = send(op, args); !r) return tl::unexpected(r.error());
  return read();
}

Result<json> ApiClient::request(const std::string& op, const json& args) {
  auto answer = call(op, args);
  if (!answer) return answer;
  if (answer->value("ok", false) && answer->contains("result")) return (*answer)["result"];
  const json& error = answer->contains("error") ? (*answer)["error"] : json::object();
  Error e{"stepsnapd " + op, "", 0, error.value("message", "answer without result or error")};
  e.kind = error.value("code", "");
  return tl::unexpected(e);
}

}  // namespace stepsnap::protocol
