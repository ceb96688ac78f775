// Which of a pod's volumes are stepsnap volumes: a step pod's registration
// names all of them, but the kubelet publishes them one NodePublishVolume
// at a time. From the pod object, each persistentVolumeClaim volume (and
// each generic ephemeral volume, whose claim is <pod>-<volume>) is read
// as a claim, its bound PV read, and the PV is ours when spec.csi.driver is
// stepsnap.csi.local; its volumeHandle is the stepsnap volume's name.
// Pure over a KubeReader (tests/csi/pod_volumes_test.cpp).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "csi/kube_reader.h"

namespace stepsnap::csi {

struct PodClaim {
  std::string volume;  // the volume's name in the pod spec
  std::string claim;   // the PersistentVolumeClaim's name, in the pod's namespace
};

// The pod's claims in spec order; other volume kinds (hostPath, configMap,
// CSI inline, ...) are none of ours.
std::vector<PodClaim> pod_claims(const nlohmann::json& pod);

// The stepsnap volume a PV holds: its spec.csi.volumeHandle when
// spec.csi.driver is this driver's name; nullopt for any other PV.
std::optional<std::string> stepsnap_volume_of(const nlohmann::json& pv);

// The distinct stepsnap volumes of the pod, in spec order. Errors name the
// pod and the claim or PV: a claim not bound yet (EAGAIN), one or its PV
// not found, and the reader's failures with their kind kept.
Result<std::vector<std::string>> pod_stepsnap_volumes(const nlohmann::json& pod,
                                                      const KubeReader& reader);

}  // namespace stepsnap::csi
