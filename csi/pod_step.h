// What a step pod asks stepsnapd for, from the pod object the API server
// returns (GET /api/v1/namespaces/NS/pods/NAME): its stepsnap.io/*
// annotations, the kubelet's cgroup for it, and how many container cgroups
// the runtime makes in it before the step's (step.register's
// pod_skip_containers; docs/kubernetes.md). Pure: unit-tested on pod JSON
// (tests/csi/pod_step_test.cpp). Called at NodePublishVolume by
// csi/pod_registrar.h with the pod the API server returned.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace stepsnap::csi {

namespace annotation {
inline constexpr const char* pipeline = "stepsnap.io/pipeline";
inline constexpr const char* run = "stepsnap.io/run";
inline constexpr const char* step = "stepsnap.io/step";
// Optional: the step's container. Default: the one named "main" (Argo's
// and Kubeflow Pipelines' step container), else the pod's only container.
inline constexpr const char* container = "stepsnap.io/container";
}  // namespace annotation

// The kubelet's --cgroup-driver.
enum class CgroupDriver { systemd, cgroupfs };

struct PodStepAsk {
  std::string pipeline;
  std::string run;
  std::string step;
  std::string container;  // the step's container, by name
  // The pod's cgroup, relative to the cgroup v2 mount (kubelet's default
  // --cgroup-root).
  std::string pod_cgroup;
  // Child cgroups the runtime makes in the pod before the step's container:
  // the sandbox, every init container, the containers listed before it. The
  // kubelet publishes volumes before it starts the sandbox, so all of them
  // come after a registration made at NodePublishVolume.
  std::uint32_t skip_containers = 0;
};

// The pod's cgroup as the kubelet names it, for its uid and QoS class
// (Guaranteed, Burstable, BestEffort). EINVAL: another QoS class.
Result<std::string> pod_cgroup_path(std::string_view uid, std::string_view qos_class,
                                    CgroupDriver driver);

// nullopt: not a step pod (none of the three stepsnap.io annotations).
// EINVAL, naming the pod, the annotation or field, and what to do: some of
// the three missing or not a valid stepsnap name, a restartPolicy other
// than Never (a restarted container makes another cgroup, which would move
// the count), no such container, several containers and none chosen, no uid
// or QoS class.
Result<std::optional<PodStepAsk>> pod_step_ask(const nlohmann::json& pod, CgroupDriver driver);

}  // namespace stepsnap::csi
