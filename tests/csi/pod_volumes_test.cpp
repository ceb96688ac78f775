// Which of a pod's volumes are stepsnap volumes, from objects shaped as the
// API server returns them, read through a reader over a map (pure logic:
// the HTTPS reader has its own test, kube_https_reader_test.cpp).
#include "csi/pod_volumes.h"

#include <gtest/gtest.h>

#include <map>

namespace stepsnap::csi {
namespace {

using json = nlohmann::json;

class MapReader : public KubeReader {
 public:
  std::map<std::string, json> objects;
  mutable std::vector<std::string> asked;
  Result<json> get(const std::string& path) const override {
    asked.push_back(path);
    auto it = objects.find(path);
    if (it == objects.end()) {
      Error e{"GET", path, 0, "not found", kube_error::not_found};
      return tl::unexpected(e);
    }
    return it->second;
  }
};

json pod_with(json volumes) {
  return {{"metadata", {{"name", "train-abc"}, {"namespace", "kubeflow"}}},
          {"spec", {{"volumes", std::move(volumes)}}}};
}

json claim(const std::string& pv) { return {{"spec", {{"volumeName", pv}}}}; }

json csi_pv(const std::string& driver, const std::string& handle) {
  return {{"spec", {{"csi", {{"driver", driver}, {"volumeHandle", handle}}}}}};
}

TEST(PodVolumes, ClaimsAndEphemeralVolumesAreReadOthersAreNot) {
  json pod = pod_with(json::parse(R"([
    {"name": "ws", "persistentVolumeClaim": {"claimName": "notebook-ws"}},
    {"name": "kube-api-access", "projected": {"sources": []}},
    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
    {"name": "host", "hostPath": {"path": "/tmp"}},
    {"name": "inline", "csi": {"driver": "stepsnap.csi.local"}}])"));
  auto claims = pod_claims(pod);
  ASSERT_EQ(claims.size(), 2u);
  EXPECT_EQ(claims[0].volume, "ws");
  EXPECT_EQ(claims[0].claim, "notebook-ws");
  EXPECT_EQ(claims[1].volume, "scratch");
  EXPECT_EQ(claims[1].claim, "train-abc-scratch");  // the ephemeral controller's name
  EXPECT_TRUE(pod_claims(json::object()).empty());
}

TEST(PodVolumes, OnlyPersistentVolumesOfThisDriverAreStepsnapVolumes) {
  EXPECT_EQ(stepsnap_volume_of(csi_pv("stepsnap.csi.local", "pvc-1")), "pvc-1");
  EXPECT_FALSE(stepsnap_volume_of(csi_pv("ebs.csi.aws.com", "vol-0abc")));
  EXPECT_FALSE(stepsnap_volume_of(csi_pv("stepsnap.csi.local", "")));
  EXPECT_FALSE(stepsnap_volume_of(json::parse(R"({"spec": {"hostPath": {"path": "/x"}}})")));
}

TEST(PodVolumes, TheStepsnapVolumesOfAPodInSpecOrderEachOnce) {
  MapReader api;
  api.objects["/api/v1/namespaces/kubeflow/persistentvolumeclaims/ws"] = claim("pv-ws");
  api.objects["/api/v1/namespaces/kubeflow/persistentvolumeclaims/data"] = claim("pv-data");
  api.objects["/api/v1/namespaces/kubeflow/persistentvolumeclaims/cache"] = claim("pv-cache");
  api.objects["/api/v1/persistentvolumes/pv-ws"] = csi_pv("stepsnap.csi.local", "pvc-ws");
  api.objects["/api/v1/persistentvolumes/pv-data"] = csi_pv("stepsnap.csi.local", "pvc-data");
  api.objects["/api/v1/persistentvolumes/pv-cache"] = csi_pv("other.csi.io", "c");
  json pod = pod_with(json::parse(R"([
    {"name": "a", "persistentVolumeClaim": {"claimName": "ws"}},
    {"name": "b", "persistentVolumeClaim": {"claimName": "cache"}},
    {"name": "c", "persistentVolumeClaim": {"claimName": "data", "readOnly": true}},
    {"name": "d", "persistentVolumeClaim": {"claimName": "ws"}}])"));
  auto names = pod_stepsnap_volumes(pod, api);
  ASSERT_TRUE(names) << names.error().message();
  EXPECT_EQ(*names, (std::vector<std::string>{"pvc-ws", "pvc-data"}));
}

TEST(PodVolumes, AnUnboundOrMissingClaimIsAnErrorNamingPodAndClaim) {
  MapReader api;
  api.objects["/api/v1/namespaces/kubeflow/persistentvolumeclaims/pending"] =
      json{{"spec", json::object()}};
  json pod = pod_with(
      json::parse(R"([{"name": "a", "persistentVolumeClaim": {"claimName": "pending"}}])"));
  auto unbound = pod_stepsnap_volumes(pod, api);
  ASSERT_FALSE(unbound);
  EXPECT_EQ(unbound.error().err, EAGAIN);
  EXPECT_NE(unbound.error().message().find("pod kubeflow/train-abc"), std::string::npos)
      << unbound.error().message();
  EXPECT_NE(unbound.error().message().find("claim pending"), std::string::npos);

  json gone =
      pod_with(json::parse(R"([{"name": "a", "persistentVolumeClaim": {"claimName": "gone"}}])"));
  auto missing = pod_stepsnap_volumes(gone, api);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().kind, kube_error::not_found);
  EXPECT_NE(missing.error().message().find("persistentvolumeclaims/gone"), std::string::npos)
      << missing.error().message();
}

}  // namespace
}  // namespace stepsnap::csi
