// What stepsnap-csi tells a CO about itself: its name, version and the
// topology key that pins every volume to the node whose pool holds it.
#pragma once

#include <string_view>

namespace stepsnap::csi {

// The CSIDriver object's name (deploy/kubernetes/csidriver.yaml).
inline constexpr std::string_view kDriverName = "stepsnap.csi.local";
inline constexpr std::string_view kDriverVersion = "0.1.0";
// One segment: the node's id. A volume lives in that node's dm-thin pool and
// nowhere else, so the scheduler must put its pods there.
inline constexpr std::string_view kTopologyKey = "topology.stepsnap.csi.local/node";

}  // namespace stepsnap::csi
