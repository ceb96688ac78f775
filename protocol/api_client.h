// A client of the stepsnapd socket API (stepsnapctl, runner): connect, send one request line, read
// answer lines. Errors are one line and say what to check.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "common/unique_fd.h"

namespace stepsnap::protocol {

class ApiClient {
 public:
  // "cannot connect to stepsnapd at PATH: No such file or directory (is
  // stepsnapd running?)".
  static Result<ApiClient> connect(const std::string& socket_path);

  // Sends {"v":1,"id":N,"op":op,"args":args}; with pass_fd >= 0, that file
  // descriptor goes along (SCM_RIGHTS) for snapshot.send/receive.
  Status send(const std::string& op, const nlohmann::json& args, int pass_fd = -1);
  // The next answer line, parsed. EPIPE when the daemon closed the connection.
  Result<nlohmann::json> read();
  // send + read.
  Result<nlohmann::json> call(const std::string& op, const nlohmann::json& args);
  // call, unwrapped: the answer's "result", or the agent's error as an Error
  // whose detail is the agent's message and whose kind is its error code
  // ("not_found", "no_space", ...).
  Result<nlohmann::json> request(const std::string& op, const nlohmann::json& args);

 private:
  ApiClient(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
  std::string buffer_;
  std::size_t read_pos_ = 0;  // where the next line in buffer_ starts
  std::uint64_t next_id_ = 1;
};

}  // namespace stepsnap::protocol
