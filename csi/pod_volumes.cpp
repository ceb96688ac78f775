#include "csi/pod_volumes.h"

#include <algorithm>
#include <cerrno>

#include "csi/driver_info.h"

namespace stepsnap::csi {

using json = nlohmann::json;

namespace {

std::string text_at(const json& obj, const char* key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& member(const json& obj, const char* key) {
  static const json null;
  if (!obj.is_object()) return null;
  auto it = obj.find(key);
  return it != obj.end() ? *it : null;
}

}  // namespace

std::vector<PodClaim> pod_claims(const json& pod) {
  std::vector<PodClaim> claims;
  const std::string pod_name = text_at(member(pod, "metadata"), "name");
  const json& volumes = member(member(pod, "spec"), "volumes");
  if (!volumes.is_array()) return claims;
  for (const json& v : volumes) {
    std::string name = text_at(v, "name");
    if (std::string claim = text_at(member(v, "persistentVolumeClaim"), "claimName");
        !claim.empty()) {
      claims.push_back({name, claim});
    } else if (member(v, "ephemeral").is_object()) {
      // The ephemeral volume controller names the claim it makes this way.
      claims.push_back({name, pod_name + "-" + name});
    }
  }
  return claims;
}

std::optional<std::string> stepsnap_volume_of(const json& pv) {
  const json& csi = member(member(pv, "spec"), "csi");
  if (text_at(csi, "driver") != kDriverName) return std::nullopt;
  std::string handle = text_at(csi, "volumeHandle");
  if (handle.empty()) return std::nullopt;
  return handle;
}

Result<std::vector<std::string>> pod_stepsnap_volumes(const json& pod, const KubeReader& reader) {
  const json& meta = member(pod, "metadata");
  const std::string ns = text_at(meta, "namespace");
  const std::string who = "pod " + ns + "/" + text_at(meta, "name");
  std::vector<std::string> names;
  for (const PodClaim& c : pod_claims(pod)) {
    auto claim = reader.get("/api/v1/namespaces/" + ns + "/persistentvolumeclaims/" + c.claim);
    if (!claim) return tl::unexpected(claim.error().context(who + " volume " + c.volume));
    std::string pv_name = text_at(member(*claim, "spec"), "volumeName");
    if (pv_name.empty())
      return fail("read step pod", who, EAGAIN,
                  "claim " + c.claim + " (volume " + c.volume +
                      ") is not bound to a volume yet; the kubelet retries");
    auto pv = reader.get("/api/v1/persistentvolumes/" + pv_name);
    if (!pv) return tl::unexpected(pv.error().context(who + " claim " + c.claim));
    auto name = stepsnap_volume_of(*pv);
    if (name && std::find(names.begin(), names.end(), *name) == names.end()) names.push_back(*name);
  }
  return names;
}

}  // namespace stepsnap::csi
