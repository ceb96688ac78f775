#include "csi/pod_registrar.h"

#include <algorithm>
#include <cerrno>

#include "common/log.h"
#include "csi/pod_volumes.h"

namespace stepsnap::csi {

using json = nlohmann::json;
using grpc::StatusCode;

namespace {

// A failed read of the pod, a claim or a PV, as the kubelet sees it.
tl::unexpected<CsiError> kube_failed(const Error& e) {
  StatusCode code = StatusCode::INTERNAL;
  if (e.kind == kube_error::forbidden)
    code = StatusCode::PERMISSION_DENIED;
  else if (e.kind == kube_error::unreachable)
    code = StatusCode::UNAVAILABLE;
  else if (e.kind == kube_error::not_found || e.err == EAGAIN)
    code = StatusCode::FAILED_PRECONDITION;
  return csi_fail(code, e.message());
}

// Bound the memory of a long-lived driver: forgetting only costs a GET and a
// step.status on a later publish of an old pod.
constexpr std::size_t kRememberedPods = 4096;

}  // namespace

CsiResult<void> PodRegistrar::on_publish(const std::string& volume_id,
                                         const std::map<std::string, std::string>& context) {
  auto at = [&](const char* key) {
    auto it = context.find(key);
    return it == context.end() ? std::string() : it->second;
  };
  const std::string name = at(pod_info::name), ns = at(pod_info::ns), uid = at(pod_info::uid);
  if (name.empty() && ns.empty() && uid.empty()) return {};  // no podInfoOnMount
  if (name.empty() || ns.empty() || uid.empty())
    return csi_fail(StatusCode::INVALID_ARGUMENT,
                    "volume_context has only part of the pod info (" + std::string(pod_info::name) +
                        ", pod.namespace, pod.uid); the kubelet sends all three when the "
                        "CSIDriver has podInfoOnMount: true");
  {
    std::lock_guard lock(mutex_);
    if (registered_.count(uid)) return {};
  }
  const std::string who = "pod " + ns + "/" + name;
  auto pod = reader_->get("/api/v1/namespaces/" + ns + "/pods/" + name);
  if (!pod) return kube_failed(pod.error().context(who));
  std::string now_uid = pod->value("/metadata/uid"_json_pointer, std::string());
  if (now_uid != uid)
    return csi_fail(StatusCode::FAILED_PRECONDITION,
                    who + " has uid " + now_uid + ", not " + uid +
                        ": the pod was replaced; the kubelet publishes for the new one");
  auto ask = pod_step_ask(*pod, driver_);
  if (!ask) return csi_fail(StatusCode::FAILED_PRECONDITION, ask.error().message());
  if (!*ask) return {};  // not a step pod
  auto volumes = pod_stepsnap_volumes(*pod, *reader_);
  if (!volumes) return kube_failed(volumes.error());
  if (std::find(volumes->begin(), volumes->end(), volume_id) == volumes->end())
    volumes->push_back(volume_id);  // a PV we could not map back still is ours
  if (auto r = register_step(who, **ask, std::move(*volumes)); !r) return r;
  std::lock_guard lock(mutex_);
  if (registered_.size() >= kRememberedPods) registered_.clear();
  registered_.insert(uid);
  return {};
}

CsiResult<void> PodRegistrar::register_step(const std::string& who, const PodStepAsk& ask,
                                            std::vector<std::string> volumes) {
  const std::string cgroup = kubepods_parent_ + "/" + ask.pod_cgroup;
  const std::string step = ask.pipeline + "/" + ask.run + "/" + ask.step;
  const json key = {{"pipeline", ask.pipeline}, {"run", ask.run}, {"step", ask.step}};
  auto status = agent_.call("step.status", key);
  if (status) {
    // Registered by an earlier publish of this pod (this driver before a
    // restart, or a publish of its other volume): its pod cgroup, or once
    // picked, its container's cgroup inside it.
    std::string pod_cgroup = status->value("pod_cgroup", "");
    std::string step_cgroup = status->value("cgroup", "");
    if (pod_cgroup == cgroup || step_cgroup == cgroup || step_cgroup.rfind(cgroup + "/", 0) == 0)
      return {};
    return csi_fail(StatusCode::FAILED_PRECONDITION,
                    who + ": step " + step + " is registered already for cgroup " + step_cgroup +
                        ", not this pod's " + cgroup +
                        "; give each step pod its own stepsnap.io/step or stepsnap.io/run");
  }
  if (status.error().kind != "not_found")
    return tl::unexpected(from_agent_error(who + ": step.status " + step, status.error()));

  json args = key;
  args["cgroup"] = cgroup;
  args["volumes"] = volumes;
  args["policy"] = "both";
  args["pod_skip_containers"] = ask.skip_containers;
  auto reg = agent_.call("step.register", args);
  if (!reg) {
    CsiError e = from_agent_error(who + ": register step " + step, reg.error());
    // ALREADY_EXISTS means "published otherwise" to a CO; here the pod's
    // cgroup holds another step.
    if (e.code == StatusCode::ALREADY_EXISTS) e.code = StatusCode::FAILED_PRECONDITION;
    return tl::unexpected(e);
  }
  std::string list;
  for (const auto& v : volumes) list += (list.empty() ? "" : ",") + v;
  log::info(who + ": registered step " + step + " on " + cgroup + " (container " + ask.container +
            ", after " + std::to_string(ask.skip_containers) + " others), volumes " + list);
  return {};
}

}  // namespace stepsnap::csi
