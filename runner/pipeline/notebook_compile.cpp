#include "runner/pipeline/notebook_compile.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/names.h"
#include "common/text.h"

extern char** environ;

namespace stepsnap::runner {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

tl::unexpected<Error> bad(const std::string& where, std::string what) {
  return tl::unexpected(Error{where, "", 0, std::move(what), "bad_notebook"});
}

std::string joined_indices(const std::vector<std::size_t>& cells) {
  std::string out;
  for (std::size_t i : cells) out += (out.empty() ? "" : ",") + std::to_string(i);
  return out;
}

std::string joined(const json& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n.get<std::string>();
  return out;
}

json cells_of(const Notebook& nb, const std::vector<std::size_t>& indices) {
  json out = json::array();
  for (std::size_t i : indices) out.push_back({{"cell", i}, {"source", nb.cells[i].source}});
  return out;
}

// A pipeline name from the notebook's file name: what stepsnap names allow.
std::string name_from_stem(const std::string& stem) {
  std::string out;
  for (char c : stem)
    out +=
        (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-') ? c : '-';
  if (out.size() > 63) out.resize(63);
  if (!is_valid_name(out)) out = "notebook";
  return out;
}

std::string normal(const std::string& path) {
  std::string p = fs::path(path).lexically_normal().string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// True when path is mount or below it, component-wise.
bool is_under(const std::string& path, const std::string& mount) {
  if (mount == "/") return true;
  return path == mount || (path.rfind(mount, 0) == 0 && path[mount.size()] == '/');
}

// Runs `python3 -m stepsnap_kale.analysis REQUEST` with python_dir on
// PYTHONPATH and returns its answer. The request goes through a file, not a
// pipe, so a large notebook cannot dead-lock the two processes.
Result<json> run_analysis(const std::string& python_dir, const json& request,
                          const std::string& file) {
  char path[] = "/tmp/stepsnap-notebook-XXXXXX";
  int fd = ::mkstemp(path);
  if (fd < 0) return fail_errno("create the analysis request", path);
  std::string text = request.dump();
  bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  struct Unlink {
    const char* p;
    ~Unlink() { ::unlink(p); }
  } unlink_request{path};
  if (!written) return fail_errno("write the analysis request", path);

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return fail_errno("pipe", "python3");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  std::vector<std::string> env_strings;
  const char* old_path = std::getenv("PYTHONPATH");
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "PYTHONPATH=", 11) != 0) env_strings.emplace_back(*e);
  env_strings.push_back("PYTHONPATH=" + python_dir +
                        (old_path && *old_path ? ":" + std::string(old_path) : ""));
  env_strings.push_back("PYTHONDONTWRITEBYTECODE=1");
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string a0 = "python3", a1 = "-m", a2 = "stepsnap_kale.analysis";
  char* argv[] = {a0.data(), a1.data(), a2.data(), path, nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, "python3", &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    return fail("run python3 for the notebook analysis", file, rc,
                "install python3 (Debian: apt-get install python3)");
  }
  std::string answer;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return bad(file, "the notebook analysis (python3 -m stepsnap_kale.analysis, from " +
                         python_dir + ") failed; its error is above");
  try {
    return json::parse(answer);
  } catch (const json::parse_error&) {
    return bad(file, "the notebook analysis answered no JSON; check " + python_dir);
  }
}

struct Volumes {
  std::vector<PipelineVolume> list;  // the workspace first
  std::string workspace_mount;
};

// Flags, then the notebook metadata's volumes for any name and mount the
// flags do not give (flags win); the workspace is the volume whose mount
// holds the notebook (the deepest one when mounts nest).
Result<Volumes> volumes_for(const NotebookCompileOptions& o, const Notebook& nb,
                            const std::string& notebook_path, const std::string& file) {
  std::vector<PipelineVolume> all;
  for (const auto& [name, mount] : o.volumes) all.push_back({name, normal(mount), false});
  const json& meta = nb.kale_metadata;
  if (meta.is_object() && meta.contains("volumes") && meta["volumes"].is_array()) {
    std::size_t i = 0;
    for (const auto& v : meta["volumes"]) {
      const std::string at = "metadata kubeflow_notebook.volumes[" + std::to_string(i++) + "]";
      if (!v.is_object() || !v.contains("name") || !v["name"].is_string() ||
          !v.contains("mount_point") || !v["mount_point"].is_string())
        return bad(file + ": " + at, "needs \"name\" and \"mount_point\" strings; fix it");
      PipelineVolume pv{v["name"].get<std::string>(), normal(v["mount_point"].get<std::string>()),
                        false};
      bool given = false;
      for (const auto& f : all) given = given || f.name == pv.name || f.mount == pv.mount;
      if (!given) all.push_back(pv);
    }
  }
  std::optional<std::size_t> workspace;
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (!is_valid_name(all[i].name))
      return bad(file, "volume \"" + all[i].name + "\": " + std::string(kNameRule));
    if (all[i].mount.empty() || all[i].mount.front() != '/')
      return bad(file, "volume " + all[i].name + ": mount \"" + all[i].mount +
                           "\" is not absolute; give --volume NAME:/absolute/path");
    if (is_under(notebook_path, all[i].mount) &&
        (!workspace || all[i].mount.size() > all[*workspace].mount.size()))
      workspace = i;
  }
  if (!workspace)
    return bad(file, "the notebook " + notebook_path +
                         " is on none of the pipeline's volumes; give the volume that holds it, "
                         "--volume NAME:MOUNT with MOUNT a folder above the notebook");
  Volumes out;
  out.workspace_mount = all[*workspace].mount;
  out.list.push_back(all[*workspace]);
  for (std::size_t i = 0; i < all.size(); ++i)
    if (i != *workspace) out.list.push_back(all[i]);
  return out;
}

}  // namespace

bool is_notebook_path(const std::string& path) {
  return path.size() > 6 && path.compare(path.size() - 6, 6, ".ipynb") == 0;
}

std::string find_python_dir() {
  auto holds = [](const fs::path& dir) {
    std::error_code ec;
    return fs::exists(dir / "stepsnap_kale" / "step.py", ec);
  };
  if (const char* env = std::getenv("STEPSNAP_PYTHON_DIR"); env && *env) return env;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path installed = exe.parent_path().parent_path() / "share" / "stepsnap" / "python";
    if (holds(installed)) return installed.string();
  }
#ifdef STEPSNAP_PYTHON_SOURCE_DIR
  if (holds(STEPSNAP_PYTHON_SOURCE_DIR)) return STEPSNAP_PYTHON_SOURCE_DIR;
#endif
  return {};
}

json analysis_request(const Notebook& nb, const KaleNotebook& kale,
                      const std::vector<std::pair<std::string, std::string>>& params) {
  json request;
  std::vector<std::size_t> prelude = kale.imports;
  prelude.insert(prelude.end(), kale.functions.begin(), kale.functions.end());
  request["prelude"] = cells_of(nb, prelude);
  request["parameters"] = cells_of(nb, kale.parameters);
  request["metrics"] = cells_of(nb, kale.metrics);
  request["steps"] = json::array();
  for (const auto& s : kale.steps)
    request["steps"].push_back(
        {{"name", s.name}, {"prev", s.prev}, {"cells", cells_of(nb, s.cells)}});
  request["overrides"] = json::object();
  for (const auto& [k, v] : params) request["overrides"][k] = v;
  return request;
}

Result<CompiledNotebook> compile_notebook(const NotebookCompileOptions& o) {
  const std::string& file = o.notebook;
  std::error_code ec;
  const std::string path = normal(fs::absolute(o.notebook, ec).string());
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail_errno("read notebook", file);
  std::stringstream text;
  text << in.rdbuf();
  auto nb = parse_notebook(text.str(), file);
  if (!nb) return tl::unexpected(nb.error());
  auto kale = parse_kale_tags(*nb, file);
  if (!kale) return tl::unexpected(kale.error());
  auto volumes = volumes_for(o, *nb, path, file);
  if (!volumes) return tl::unexpected(volumes.error());

  const std::string python_dir = o.python_dir.empty() ? find_python_dir() : o.python_dir;
  if (python_dir.empty())
    return bad(file,
               "cannot find stepsnap's Python helper (stepsnap_kale/); install stepsnap or set "
               "STEPSNAP_PYTHON_DIR to the folder that holds it");
  json request = analysis_request(*nb, *kale, o.params);
  request["notebook"] = path;
  auto answer = run_analysis(python_dir, request, file);
  if (!answer) return tl::unexpected(answer.error());
  if (!answer->value("ok", false)) {
    int cell = answer->value("cell", -1);
    int line = answer->value("line", 0);
    std::string where = file;
    if (cell >= 0) where += ": " + cell_label(*nb, static_cast<std::size_t>(cell));
    if (cell >= 0 && line > 0) where += ", line " + std::to_string(line);
    return bad(where, answer->value("message", "the notebook analysis failed"));
  }

  CompiledNotebook out;
  out.warnings = kale->warnings;
  PipelineSpec& spec = out.spec;
  const json& meta = nb->kale_metadata;
  std::string pipeline_name = meta.is_object() ? meta.value("pipeline_name", "") : "";
  spec.pipeline =
      is_valid_name(pipeline_name) ? pipeline_name : name_from_stem(fs::path(path).stem().string());
  spec.volumes = volumes->list;
  const std::string folder = fs::path(path).parent_path().string();
  spec.workdir = folder;
  // Kale's marshal folder: hidden, next to the notebook, named after it.
  const std::string marshal_name = "." + fs::path(path).filename().string() + ".kale.marshal.dir";
  std::string relative = fs::path(folder).lexically_relative(volumes->workspace_mount).string();
  spec.marshal = relative == "." ? marshal_name : relative + "/" + marshal_name;
  const std::string marshal_path = folder + "/" + marshal_name;
  spec.env = {
      {"PYTHONPATH", python_dir}, {"PYTHONDONTWRITEBYTECODE", "1"}, {"PYTHONUNBUFFERED", "1"}};

  std::vector<std::size_t> prelude = kale->imports;
  prelude.insert(prelude.end(), kale->functions.begin(), kale->functions.end());
  const json& analysed = (*answer)["steps"];
  for (std::size_t i = 0; i < kale->steps.size(); ++i) {
    const KaleStep& ks = kale->steps[i];
    const json& a = analysed.at(i);
    PipelineStep step;
    step.name = ks.name;
    step.after = ks.prev;
    step.memory_bytes = ks.memory_bytes;
    step.command = {"python3",
                    "-m",
                    "stepsnap_kale.step",
                    "--notebook",
                    path,
                    "--sha256",
                    answer->value("sha256", ""),
                    "--step",
                    ks.name,
                    "--marshal",
                    marshal_path};
    auto add = [&](const char* flag, const std::string& value) {
      if (value.empty()) return;
      step.command.push_back(flag);
      step.command.push_back(value);
    };
    add("--prelude", joined_indices(prelude));
    add("--parameters", joined_indices(kale->parameters));
    add("--cells", joined_indices(ks.cells));
    add("--inputs", joined(a["inputs"]));
    add("--outputs", joined(a["outputs"]));
    add("--metrics", joined(a["metrics"]));
    for (const auto& [k, v] : o.params) add("--param", k + "=" + v);
    std::vector<std::string> metrics;
    for (const auto& m : a["metrics"]) metrics.push_back(m.get<std::string>());
    if (!metrics.empty()) out.metrics.emplace_back(ks.name, metrics);
    spec.steps.push_back(std::move(step));
  }
  // The same checks as a pipeline file: names, mounts, the graph.
  auto checked = parse_pipeline(pipeline_to_json(spec), file);
  if (!checked) return tl::unexpected(checked.error());
  if (auto order = execution_order(spec); !order) return tl::unexpected(order.error());
  return out;
}

}  // namespace stepsnap::runner
