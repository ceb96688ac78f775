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

Status ApiClient::send(const std::string& op, const json& args) {
  json req = {{"v", 1}, {"id", next_id_++}, {"op", op}};
  if (!args.is_null() && !args.empty()) req["args"] = args;
  std::string line = req.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::size_t off = 0;
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
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      auto j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        return fail("read from stepsnapd at", path_, EPROTO, "answer is not a JSON object");
      }
      return j;
    }
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
