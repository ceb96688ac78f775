#include "csi/pod_step.h"

#include <cerrno>

#include "common/names.h"

namespace stepsnap::csi {

using json = nlohmann::json;

namespace {

std::string text_at(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& object_at(const json& obj, const char* key) {
  static const json empty = json::object();
  auto it = obj.find(key);
  return it != obj.end() && it->is_object() ? *it : empty;
}

const json& array_at(const json& obj, const char* key) {
  static const json empty = json::array();
  auto it = obj.find(key);
  return it != obj.end() && it->is_array() ? *it : empty;
}

}  // namespace

Result<std::string> pod_cgroup_path(std::string_view uid, std::string_view qos_class,
                                    CgroupDriver driver) {
  std::string qos;
  if (qos_class == "Burstable")
    qos = "burstable";
  else if (qos_class == "BestEffort")
    qos = "besteffort";
  else if (qos_class != "Guaranteed")
    return fail("pod cgroup", std::string(qos_class), EINVAL,
                "not a QoS class (Guaranteed, Burstable, BestEffort)");
  if (driver == CgroupDriver::cgroupfs)
    return "kubepods/" + (qos.empty() ? "" : qos + "/") + "pod" + std::string(uid);
  // systemd: slices nest by name, and '-' separates their levels, so the
  // uid's dashes become underscores.
  std::string escaped(uid);
  for (char& c : escaped)
    if (c == '-') c = '_';
  if (qos.empty()) return "kubepods.slice/kubepods-pod" + escaped + ".slice";
  return "kubepods.slice/kubepods-" + qos + ".slice/kubepods-" + qos + "-pod" + escaped + ".slice";
}

Result<std::optional<PodStepAsk>> pod_step_ask(const json& pod, CgroupDriver driver) {
  const json& meta = object_at(pod, "metadata");
  const json& spec = object_at(pod, "spec");
  const json& annotations = object_at(meta, "annotations");
  const std::string who = "pod " + text_at(meta, "namespace") + "/" + text_at(meta, "name");
  auto invalid = [&](const std::string& what) -> Result<std::optional<PodStepAsk>> {
    return fail("read step pod", who, EINVAL, what);
  };

  PodStepAsk ask;
  ask.pipeline = text_at(annotations, annotation::pipeline);
  ask.run = text_at(annotations, annotation::run);
  ask.step = text_at(annotations, annotation::step);
  if (ask.pipeline.empty() && ask.run.empty() && ask.step.empty()) return std::nullopt;
  for (auto [key, value] :
       {std::pair{annotation::pipeline, &ask.pipeline}, std::pair{annotation::run, &ask.run},
        std::pair{annotation::step, &ask.step}}) {
    if (value->empty())
      return invalid(std::string("annotation ") + key +
                     " is missing; a step pod names its pipeline, run and step");
    if (auto problem = name_problem(*value))
      return invalid(std::string("annotation ") + key + " " + *problem);
  }
  // Default Always: a restarted container (or init container) makes another
  // child cgroup, which the count of cgroups before the step's cannot know.
  std::string restart = text_at(spec, "restartPolicy");
  if (restart != "Never")
    return invalid("restartPolicy is " + (restart.empty() ? std::string("Always") : restart) +
                   "; a step pod needs restartPolicy: Never");

  const json& containers = array_at(spec, "containers");
  std::string wanted = text_at(annotations, annotation::container);
  std::optional<std::size_t> index;
  for (std::size_t i = 0; i < containers.size(); ++i) {
    std::string name = text_at(containers[i], "name");
    if (!wanted.empty() ? name == wanted : name == "main") index = i;
  }
  if (!index && wanted.empty() && containers.size() == 1) index = 0;
  if (!index) {
    if (!wanted.empty())
      return invalid(std::string("annotation ") + annotation::container + " names " + wanted +
                     ", which is not one of the pod's containers");
    return invalid(
        "it has several containers and none named main; name the step's with the "
        "annotation " +
        std::string(annotation::container));
  }
  ask.container = text_at(containers[*index], "name");

  std::string uid = text_at(meta, "uid");
  if (uid.empty()) return invalid("metadata.uid is missing");
  std::string qos = text_at(object_at(pod, "status"), "qosClass");
  if (qos.empty()) return invalid("status.qosClass is missing (the API server sets it)");
  auto cgroup = pod_cgroup_path(uid, qos, driver);
  if (!cgroup) return tl::unexpected(cgroup.error().context(who));
  ask.pod_cgroup = *cgroup;
  ask.skip_containers =
      static_cast<std::uint32_t>(1 + array_at(spec, "initContainers").size() + *index);
  return ask;
}

}  // namespace stepsnap::csi
