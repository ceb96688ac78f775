// A step pod's registration at NodePublishVolume (docs/kubernetes.md, "Step
// snapshots for unprivileged pods"). With podInfoOnMount the kubelet puts
// the pod's name, namespace and uid in volume_context; the pod is read from
// the API server, and when it carries the stepsnap.io annotations its step
// is registered with stepsnapd once, by the pod's cgroup, with every
// stepsnap volume of the pod, before the publish answers (the kubelet starts
// the sandbox only after every volume is published). Later publishes of the
// same pod find the step registered and go on. A pod without the
// annotations costs one GET of the pod and registers nothing.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "csi/agent_link.h"
#include "csi/kube_reader.h"
#include "csi/pod_step.h"
#include "csi/status_map.h"

namespace stepsnap::csi {

namespace pod_info {
inline constexpr const char* name = "csi.storage.k8s.io/pod.name";
inline constexpr const char* ns = "csi.storage.k8s.io/pod.namespace";
inline constexpr const char* uid = "csi.storage.k8s.io/pod.uid";
}  // namespace pod_info

class PodRegistrar {
 public:
  // kubepods_parent: the cgroup v2 directory, as stepsnapd sees it, that
  // holds the kubelet's kubepods tree (the cgroup2 mount on a node).
  PodRegistrar(const AgentLink& agent, std::unique_ptr<KubeReader> reader, CgroupDriver driver,
               std::string kubepods_parent)
      : agent_(agent),
        reader_(std::move(reader)),
        driver_(driver),
        kubepods_parent_(std::move(kubepods_parent)) {}

  // Called by NodePublishVolume for volume `volume_id` with its
  // volume_context. OK: not a pod publish, not a step pod, or the step is
  // registered (now or before). Errors: INVALID_ARGUMENT for a partial pod
  // info; FAILED_PRECONDITION for a pod whose ask is refused (annotations,
  // restartPolicy, containers), a replaced pod, an unbound claim, or a step
  // name registered for another pod; PERMISSION_DENIED when the API server
  // refuses us (RBAC); UNAVAILABLE when it does not answer (the kubelet
  // retries); stepsnapd's refusals mapped as everywhere.
  CsiResult<void> on_publish(const std::string& volume_id,
                             const std::map<std::string, std::string>& volume_context);

 private:
  CsiResult<void> register_step(const std::string& who, const PodStepAsk& ask,
                                std::vector<std::string> volumes);

  const AgentLink& agent_;
  std::unique_ptr<KubeReader> reader_;
  const CgroupDriver driver_;
  const std::string kubepods_parent_;
  // Pod uids registered by this process: their later publishes ask nothing.
  // After a restart stepsnapd's step.status answers the same question.
  std::mutex mutex_;
  std::set<std::string> registered_;
};

}  // namespace stepsnap::csi
