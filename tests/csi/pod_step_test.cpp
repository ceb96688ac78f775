// A step pod's ask, from pod objects shaped as the API server returns them:
// the annotations, the kubelet's cgroup for the pod, and the count of
// container cgroups before the step's.
#include "csi/pod_step.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace stepsnap::csi {
namespace {

using json = nlohmann::json;

// An Argo/Kubeflow Pipelines step pod: one init container, the executor's
// "wait" sidecar listed before "main".
json argo_pod() {
  return json::parse(R"({
    "metadata": {"name": "train-abc", "namespace": "kubeflow",
                 "uid": "1f2e3d4c-5b6a-4789-a0b1-c2d3e4f5a6b7",
                 "annotations": {"stepsnap.io/pipeline": "titanic", "stepsnap.io/run": "run-7",
                                 "stepsnap.io/step": "train",
                                 "workflows.argoproj.io/node-name": "train"}},
    "spec": {"restartPolicy": "Never",
             "initContainers": [{"name": "init", "image": "argoexec"}],
             "containers": [{"name": "wait", "image": "argoexec"},
                            {"name": "main", "image": "python"}]},
    "status": {"qosClass": "BestEffort", "phase": "Pending"}})");
}

TEST(PodStep, ArgoStepPodAsksForItsMainContainerAfterSandboxInitAndWait) {
  auto ask = pod_step_ask(argo_pod(), CgroupDriver::systemd);
  ASSERT_TRUE(ask) << ask.error().message();
  ASSERT_TRUE(ask->has_value());
  const PodStepAsk& a = **ask;
  EXPECT_EQ(a.pipeline, "titanic");
  EXPECT_EQ(a.run, "run-7");
  EXPECT_EQ(a.step, "train");
  EXPECT_EQ(a.container, "main");
  EXPECT_EQ(a.skip_containers, 3u);  // sandbox, init, wait
  EXPECT_EQ(a.pod_cgroup,
            "kubepods.slice/kubepods-besteffort.slice/"
            "kubepods-besteffort-pod1f2e3d4c_5b6a_4789_a0b1_c2d3e4f5a6b7.slice");
}

TEST(PodStep, PodCgroupFollowsTheKubeletsDriverAndQosClass) {
  const char* uid = "0a-1b";
  EXPECT_EQ(*pod_cgroup_path(uid, "Guaranteed", CgroupDriver::systemd),
            "kubepods.slice/kubepods-pod0a_1b.slice");
  EXPECT_EQ(*pod_cgroup_path(uid, "Burstable", CgroupDriver::systemd),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a_1b.slice");
  EXPECT_EQ(*pod_cgroup_path(uid, "Guaranteed", CgroupDriver::cgroupfs), "kubepods/pod0a-1b");
  EXPECT_EQ(*pod_cgroup_path(uid, "BestEffort", CgroupDriver::cgroupfs),
            "kubepods/besteffort/pod0a-1b");
  auto bad = pod_cgroup_path(uid, "Premium", CgroupDriver::systemd);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().err, EINVAL);
}

TEST(PodStep, ANamedContainerOrTheOnlyOneIsTheStep) {
  json pod = argo_pod();
  pod["metadata"]["annotations"]["stepsnap.io/container"] = "wait";
  EXPECT_EQ((*pod_step_ask(pod, CgroupDriver::systemd))->skip_containers, 2u);
  json single = argo_pod();
  single["spec"]["containers"] = json::array({{{"name", "step"}}});
  single["spec"].erase("initContainers");
  auto ask = pod_step_ask(single, CgroupDriver::cgroupfs);
  ASSERT_TRUE(ask && ask->has_value());
  EXPECT_EQ((*ask)->container, "step");
  EXPECT_EQ((*ask)->skip_containers, 1u);  // the sandbox only
  EXPECT_EQ((*ask)->pod_cgroup, "kubepods/besteffort/pod1f2e3d4c-5b6a-4789-a0b1-c2d3e4f5a6b7");
}

TEST(PodStep, APodWithoutStepAnnotationsIsNoStepPod) {
  json pod = argo_pod();
  pod["metadata"]["annotations"] = json::object();
  auto ask = pod_step_ask(pod, CgroupDriver::systemd);
  ASSERT_TRUE(ask);
  EXPECT_FALSE(ask->has_value());
  pod["metadata"].erase("annotations");
  EXPECT_FALSE(pod_step_ask(pod, CgroupDriver::systemd)->has_value());
}

std::string refusal(const json& pod) {
  auto ask = pod_step_ask(pod, CgroupDriver::systemd);
  if (ask) return "accepted";
  EXPECT_EQ(ask.error().err, EINVAL);
  return ask.error().message();
}

TEST(PodStep, RefusalsNameThePodAndWhatToChange) {
  json pod = argo_pod();
  pod["metadata"]["annotations"].erase("stepsnap.io/run");
  EXPECT_NE(refusal(pod).find("pod kubeflow/train-abc"), std::string::npos) << refusal(pod);
  EXPECT_NE(refusal(pod).find("annotation stepsnap.io/run is missing"), std::string::npos);

  pod = argo_pod();
  pod["metadata"]["annotations"]["stepsnap.io/step"] = "Train Step!";
  EXPECT_NE(refusal(pod).find("annotation stepsnap.io/step"), std::string::npos) << refusal(pod);

  pod = argo_pod();
  pod["spec"].erase("restartPolicy");
  EXPECT_NE(refusal(pod).find("restartPolicy is Always; a step pod needs restartPolicy: Never"),
            std::string::npos)
      << refusal(pod);

  pod = argo_pod();
  pod["metadata"]["annotations"]["stepsnap.io/container"] = "trainer";
  EXPECT_NE(refusal(pod).find("names trainer, which is not one of the pod's containers"),
            std::string::npos)
      << refusal(pod);

  pod = argo_pod();
  pod["spec"]["containers"][1]["name"] = "trainer";
  EXPECT_NE(refusal(pod).find("several containers and none named main"), std::string::npos)
      << refusal(pod);

  pod = argo_pod();
  pod["status"].erase("qosClass");
  EXPECT_NE(refusal(pod).find("status.qosClass is missing"), std::string::npos);
  pod = argo_pod();
  pod["metadata"].erase("uid");
  EXPECT_NE(refusal(pod).find("metadata.uid is missing"), std::string::npos);
}

}  // namespace
}  // namespace stepsnap::csi
