#include "tests/csi/local_api_server.h"

#include <httplib.h>

#include <chrono>
#include <cstdlib>
#include <fstream>

namespace stepsnap::testing {

using json = nlohmann::json;

std::unique_ptr<LocalApiServer> LocalApiServer::start(const std::string& dir, std::string* why) {
  std::unique_ptr<LocalApiServer> s(new LocalApiServer());
  s->cert_ = dir + "/api-server.crt";
  s->key_ = dir + "/api-server.key";
  s->token_file_ = dir + "/token";
  s->token_ = "test-token-" + std::to_string(::getpid());
  // The client checks the name it dialled against the certificate: the
  // address goes in subjectAltName, as in a cluster's serving certificate.
  std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
      "-addext subjectAltName=IP:127.0.0.1 -keyout " +
      s->key_ + " -out " + s->cert_ + " 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) {
    *why = "openssl req failed: " + cmd;
    return nullptr;
  }
  std::ofstream(s->token_file_) << s->token_ << "\n";
  s->server_ = std::make_unique<httplib::SSLServer>(s->cert_.c_str(), s->key_.c_str());
  if (!s->server_->is_valid()) {
    *why = "the HTTPS server cannot use " + s->cert_;
    return nullptr;
  }
  LocalApiServer* self = s.get();
  s->server_->Get(".*", [self](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(self->mutex_);
    self->requests_.push_back(req.path);
    auto status = [&](int code, const std::string& reason) {
      res.status = code;
      res.set_content(
          json{{"kind", "Status"}, {"status", "Failure"}, {"reason", reason}, {"code", code}}
              .dump(),
          "application/json");
    };
    if (req.get_header_value("Authorization") != "Bearer " + self->token_)
      return status(401, "Unauthorized");
    if (self->forbidden_) return status(403, "Forbidden");
    auto it = self->objects_.find(req.path);
    if (it == self->objects_.end()) return status(404, "NotFound");
    res.set_content(it->second.dump(), "application/json");
  });
  s->port_ = s->server_->bind_to_any_port("127.0.0.1");
  if (s->port_ <= 0) {
    *why = "cannot bind 127.0.0.1 (is loopback up?)";
    return nullptr;
  }
  s->thread_ = std::thread([self] { self->server_->listen_after_bind(); });
  // A stop() before the listen loop runs would be lost and the join hang.
  for (int i = 0; i < 500 && !s->server_->is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return s;
}

LocalApiServer::~LocalApiServer() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void LocalApiServer::put(const std::string& path, json object) {
  std::lock_guard lock(mutex_);
  objects_[path] = std::move(object);
}

void LocalApiServer::forbid(bool forbidden) {
  std::lock_guard lock(mutex_);
  forbidden_ = forbidden;
}

std::vector<std::string> LocalApiServer::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

}  // namespace stepsnap::testing
