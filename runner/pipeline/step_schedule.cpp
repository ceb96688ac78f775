#include "runner/pipeline/step_schedule.h"

#include <algorithm>

namespace stepsnap::runner {

StepSchedule::StepSchedule(const PipelineSpec& spec, std::vector<std::size_t> order,
                           std::set<std::size_t> restored)
    : spec_(spec),
      order_(std::move(order)),
      state_(spec.steps.size(), State::pending),
      skip_cause_(spec.steps.size()) {
  for (std::size_t i : order_) {
    if (restored.count(i)) {
      state_[i] = State::ok;
      settled_.push_back({i, std::nullopt});
    }
  }
}

std::vector<StepSchedule::Settled> StepSchedule::take_settled() {
  settle_what_is_decided();
  return std::exchange(settled_, {});
}

void StepSchedule::settle_what_is_decided() {
  // In execution order, so a skip reaches the steps after it in one pass.
  for (std::size_t i : order_) {
    if (state_[i] != State::pending || !skip_cause_[i]) continue;
    state_[i] = State::settled;
    settled_.push_back({i, skip_cause_[i]});
  }
}

std::vector<std::size_t> StepSchedule::start_ready(std::size_t slots) {
  settle_what_is_decided();
  std::vector<std::size_t> out;
  for (std::size_t i : order_) {
    if (running_.size() >= slots) break;
    if (state_[i] != State::pending) continue;
    bool ready = true;
    for (const auto& name : spec_.steps[i].after) {
      auto dep = find_step(spec_, name);
      if (dep && state_[*dep] != State::ok) ready = false;
    }
    if (!ready) continue;
    state_[i] = State::running;
    running_.insert(i);
    out.push_back(i);
  }
  return out;
}

void StepSchedule::finished(std::size_t step, bool ok) {
  running_.erase(step);
  state_[step] = ok ? State::ok : State::failed;
  if (ok) return;
  for (std::size_t d : dependents_of(spec_, step)) {
    if (!skip_cause_[d]) skip_cause_[d] = step;
  }
}

bool StepSchedule::done() const {
  if (!running_.empty()) return false;
  return std::none_of(order_.begin(), order_.end(), [&](std::size_t i) {
    return state_[i] == State::pending && !skip_cause_[i];
  });
}

}  // namespace stepsnap::runner
