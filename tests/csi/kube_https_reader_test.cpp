// The HTTPS reader against a local stand-in for the API server
// (local_api_server.h: cpp-httplib with a self-signed certificate made by
// openssl): the token sent, the server's certificate checked against the
// CA file, and each failure one line that says what to do.
#include "csi/kube_https_reader.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "tests/csi/local_api_server.h"

namespace stepsnap::csi {
namespace {

using json = nlohmann::json;
using stepsnap::testing::LocalApiServer;

class KubeHttpsReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/stepsnap-kube-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::string why;
    api_ = LocalApiServer::start(dir_, &why);
    ASSERT_TRUE(api_) << why;
  }
  void TearDown() override {
    api_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<KubeHttpsReader> reader(const std::string& ca) {
    auto r = KubeHttpsReader::make({api_->url(), api_->token_file(), ca});
    EXPECT_TRUE(r) << r.error().message();
    return r ? std::move(*r) : nullptr;
  }
  std::string dir_;
  std::unique_ptr<LocalApiServer> api_;
};

TEST_F(KubeHttpsReaderTest, GetsTheObjectWithTheTokenOverVerifiedTls) {
  api_->put("/api/v1/namespaces/ns/pods/p", json{{"kind", "Pod"}, {"metadata", {{"uid", "u"}}}});
  auto r = reader(api_->ca_file());
  ASSERT_TRUE(r);
  auto pod = r->get("/api/v1/namespaces/ns/pods/p");
  ASSERT_TRUE(pod) << pod.error().message();
  EXPECT_EQ((*pod)["metadata"]["uid"], "u");
  EXPECT_EQ(api_->requests(), (std::vector<std::string>{"/api/v1/namespaces/ns/pods/p"}));

  auto missing = r->get("/api/v1/namespaces/ns/pods/q");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().kind, kube_error::not_found);
}

TEST_F(KubeHttpsReaderTest, RbacRefusalSaysWhichRulesToGive) {
  api_->forbid(true);
  auto r = reader(api_->ca_file());
  ASSERT_TRUE(r);
  auto pod = r->get("/api/v1/namespaces/ns/pods/p");
  ASSERT_FALSE(pod);
  EXPECT_EQ(pod.error().kind, kube_error::forbidden);
  EXPECT_NE(pod.error().message().find("get on pods, persistentvolumeclaims, persistentvolumes"),
            std::string::npos)
      << pod.error().message();
}

TEST_F(KubeHttpsReaderTest, AWrongTokenIsUnauthorized) {
  std::string other = dir_ + "/other-token";
  std::ofstream(other) << "not-the-token\n";
  auto r = KubeHttpsReader::make({api_->url(), other, api_->ca_file()});
  ASSERT_TRUE(r);
  auto pod = (*r)->get("/api/v1/namespaces/ns/pods/p");
  ASSERT_FALSE(pod);
  EXPECT_EQ(pod.error().kind, kube_error::forbidden);
  EXPECT_NE(pod.error().message().find("unauthorized"), std::string::npos) << pod.error().message();
}

TEST_F(KubeHttpsReaderTest, AServerNotSignedByTheCaIsNotTrusted) {
  // Another self-signed certificate as the CA: the server's does not chain to it.
  std::string ca = dir_ + "/other-ca.crt";
  ASSERT_EQ(std::system(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other "
                         "-keyout " +
                         dir_ + "/other.key -out " + ca + " 2>/dev/null")
                            .c_str()),
            0);
  api_->put("/api/v1/namespaces/ns/pods/p", json{{"kind", "Pod"}});
  auto r = reader(ca);
  ASSERT_TRUE(r);
  auto pod = r->get("/api/v1/namespaces/ns/pods/p");
  ASSERT_FALSE(pod);
  EXPECT_EQ(pod.error().kind, kube_error::unreachable);
  EXPECT_NE(pod.error().message().find("--kube-ca-file"), std::string::npos)
      << pod.error().message();
  EXPECT_TRUE(api_->requests().empty()) << "a request reached an untrusted server";
}

TEST_F(KubeHttpsReaderTest, BadConfigurationIsRefusedAtStart) {
  auto http = KubeHttpsReader::make({"http://127.0.0.1:1", api_->token_file(), api_->ca_file()});
  ASSERT_FALSE(http);
  EXPECT_NE(http.error().message().find("https://HOST"), std::string::npos);
  auto no_ca = KubeHttpsReader::make({api_->url(), api_->token_file(), dir_ + "/none.crt"});
  ASSERT_FALSE(no_ca);
  EXPECT_NE(no_ca.error().message().find("--kube-ca-file"), std::string::npos);
}

TEST(KubeApiUrl, InClusterFromTheServiceEnvironment) {
  ::setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  ::setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  EXPECT_EQ(in_cluster_api_url(), "https://10.96.0.1:443");
  ::setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
  EXPECT_EQ(in_cluster_api_url(), "https://[fd00::1]:443");
  ::unsetenv("KUBERNETES_SERVICE_HOST");
  EXPECT_EQ(in_cluster_api_url(), "");
  ::unsetenv("KUBERNETES_SERVICE_PORT");
}

}  // namespace
}  // namespace stepsnap::csi
