#include "agent/retention/retention_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "common/unique_fd.h"

namespace stepsnap::agent {

using json = nlohmann::json;

Result<RetentionStore> RetentionStore::open(RetentionRules config, std::string file) {
  RetentionStore store(std::move(config), std::move(file));
  // stat first: std::ifstream does not say why it failed, and only "no
  // such file" means "no API rules yet".
  struct stat st {};
  if (::stat(store.file_.c_str(), &st) != 0) {
    if (errno == ENOENT) return store;
    return fail("read retention rules", store.file_, errno);
  }
  std::ifstream in(store.file_);
  if (!in) return fail("read retention rules", store.file_, EACCES, "cannot open it");
  std::stringstream text;
  text << in.rdbuf();
  json doc = json::parse(text.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("rules") ||
      !doc["rules"].is_object()) {
    return fail("read retention rules", store.file_, EINVAL,
                "not the {\"rules\":{...}} stepsnapd writes; fix or remove it (the rules set "
                "over the API are then gone)");
  }
  for (auto it = doc["rules"].begin(); it != doc["rules"].end(); ++it) {
    auto rule = rule_from_json(it.value());
    if (!rule) return tl::unexpected(rule.error().context("read retention rules " + store.file_));
    store.api_[it.key()] = *rule;
  }
  return store;
}

RetentionStore::RetentionStore(RetentionStore&& other) noexcept
    : config_(std::move(other.config_)),
      api_(std::move(other.api_)),
      file_(std::move(other.file_)) {}

RetentionRules RetentionStore::rules() const {
  std::lock_guard lock(mutex_);
  RetentionRules out = config_;
  for (const auto& [pipeline, rule] : api_) out[pipeline] = rule;
  return out;
}

Status RetentionStore::set(const std::string& pipeline, const std::optional<RetentionRule>& rule) {
  std::lock_guard lock(mutex_);
  RetentionRules before = api_;
  if (rule)
    api_[pipeline] = *rule;
  else
    api_.erase(pipeline);
  if (auto r = save(); !r) {
    api_ = std::move(before);  // what is in force is what the file says
    return r;
  }
  return {};
}

json RetentionStore::show() const {
  std::lock_guard lock(mutex_);
  json out = json::array();
  RetentionRules all = config_;
  for (const auto& [pipeline, rule] : api_) all[pipeline] = rule;
  for (const auto& [pipeline, rule] : all) {
    json j = rule_json(rule);
    j["pipeline"] = pipeline;
    j["source"] = api_.count(pipeline) ? "api" : "config";
    out.push_back(j);
  }
  return out;
}

Status RetentionStore::save() const {
  json rules = json::object();
  for (const auto& [pipeline, rule] : api_) rules[pipeline] = rule_json(rule);
  const std::string text = json{{"version", 1}, {"rules", rules}}.dump(2) + "\n";
  const std::string tmp = file_ + ".new";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return fail("write retention rules", tmp, errno);
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("write retention rules", tmp, errno);
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail("write retention rules", tmp, errno);
  fd.reset();
  if (::rename(tmp.c_str(), file_.c_str()) != 0) return fail("write retention rules", file_, errno);
  return {};
}

}  // namespace stepsnap::agent
