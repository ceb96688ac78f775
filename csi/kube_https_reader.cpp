#include "csi/kube_https_reader.h"

#include <httplib.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace stepsnap::csi {

using json = nlohmann::json;

namespace {

// The token file without its trailing newline; empty when unreadable.
std::string read_token(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' '))
    token.pop_back();
  return token;
}

tl::unexpected<Error> kube_fail(const std::string& path, const char* kind, std::string detail) {
  Error e{"GET", path, 0, std::move(detail), kind};
  return tl::unexpected(std::move(e));
}

}  // namespace

std::string in_cluster_api_url() {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !*host || !port || !*port) return "";
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";
  return "https://" + h + ":" + port;
}

Result<std::unique_ptr<KubeHttpsReader>> KubeHttpsReader::make(const KubeApiConfig& config) {
  if (config.url.rfind("https://", 0) != 0 || config.url.size() <= 8 ||
      config.url.find('/', 8) != std::string::npos)
    return fail("use --kube-api", config.url, EINVAL, "give https://HOST[:PORT], no path");
  if (std::ifstream(config.ca_file).fail())
    return fail("read --kube-ca-file", config.ca_file, ENOENT,
                "the API server's CA (in a pod: the service account's ca.crt)");
  return std::unique_ptr<KubeHttpsReader>(new KubeHttpsReader(config));
}

Result<json> KubeHttpsReader::get(const std::string& path) const {
  // A client per call: NodePublishVolume is rare, and a fresh connection
  // never inherits a half-broken one after an API server restart.
  httplib::Client client(config_.url);
  client.set_ca_cert_path(config_.ca_file.c_str());
  client.enable_server_certificate_verification(true);
  client.set_connection_timeout(5);
  client.set_read_timeout(15);
  std::string token = read_token(config_.token_file);
  if (!token.empty()) client.set_bearer_token_auth(token);
  auto res = client.Get(path, {{"Accept", "application/json"}});
  if (!res)
    return kube_fail(path, kube_error::unreachable,
                     "no answer from the API server at " + config_.url + " (" +
                         httplib::to_string(res.error()) +
                         "); check --kube-api and --kube-ca-file");
  if (res->status == 404) return kube_fail(path, kube_error::not_found, "not found");
  if (res->status == 401)
    return kube_fail(path, kube_error::forbidden,
                     "unauthorized: the token in " + config_.token_file +
                         " was refused; check the service account's token");
  if (res->status == 403)
    return kube_fail(path, kube_error::forbidden,
                     "forbidden: give the service account get on pods, persistentvolumeclaims, "
                     "persistentvolumes (deploy/kubernetes/rbac.yaml)");
  if (res->status >= 500 || res->status == 429)
    return kube_fail(path, kube_error::unreachable,
                     "the API server answered " + std::to_string(res->status) + "; retry later");
  if (res->status != 200)
    return kube_fail(path, kube_error::bad_answer,
                     "the API server answered " + std::to_string(res->status));
  json object = json::parse(res->body, nullptr, false);
  if (object.is_discarded() || !object.is_object())
    return kube_fail(path, kube_error::bad_answer, "the answer is not a JSON object");
  return object;
}

}  // namespace stepsnap::csi
