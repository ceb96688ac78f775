// A stand-in for the Kubernetes API server in tests: cpp-httplib's HTTPS
// server on 127.0.0.1 with a self-signed certificate that `openssl req`
// makes for the test, serving the objects the test puts (pods, claims,
// volumes) at the paths the API server serves them, to a client with the
// test's bearer token. It is not a cluster: no watch, no RBAC of its own
// beyond what the test asks for (forbid()).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class SSLServer;
}

namespace stepsnap::testing {

class LocalApiServer {
 public:
  // Key, certificate (for IP 127.0.0.1) and token written under `dir`;
  // nullptr and `why` set when openssl or the server fails.
  static std::unique_ptr<LocalApiServer> start(const std::string& dir, std::string* why);
  ~LocalApiServer();

  void put(const std::string& path, nlohmann::json object);
  // Every GET answered 403, as the API server does without an RBAC rule.
  void forbid(bool forbidden);
  // The paths of the GETs made so far, in order.
  std::vector<std::string> requests() const;

  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  const std::string& ca_file() const { return cert_; }  // self-signed: its own CA
  const std::string& token_file() const { return token_file_; }

 private:
  LocalApiServer() = default;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;
  int port_ = 0;
  std::string cert_, key_, token_file_, token_;
  mutable std::mutex mutex_;
  std::map<std::string, nlohmann::json> objects_;
  std::vector<std::string> requests_;
  bool forbidden_ = false;
};

}  // namespace stepsnap::testing
