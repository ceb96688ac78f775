// Which steps of a run may start now, given what has finished: the
// scheduling of `runner pipeline run --parallel N`, without processes in it.
//
// A step is ready when every step it names in `after` finished ok or was
// restored. A step that failed makes every step depending on it, directly or
// through others, skipped; the rest of the pipeline still runs. Steps are
// offered in execution order, so with one slot the run is the sequential one.
#pragma once

#include <cstddef>
#include <optional>
#include <set>
#include <vector>

#include "runner/pipeline/pipeline_spec.h"

namespace stepsnap::runner {

class StepSchedule {
 public:
  // `order` from execution_order(spec); `restored`: steps a --restore run
  // does not re-run (they count as done, ok).
  StepSchedule(const PipelineSpec& spec, std::vector<std::size_t> order,
               std::set<std::size_t> restored);

  // A step decided without running: restored, or skipped because of `cause`.
  struct Settled {
    std::size_t step = 0;
    std::optional<std::size_t> skipped_because;  // absent: restored
  };
  // Everything decided since the last call, in execution order.
  std::vector<Settled> take_settled();

  // Steps that may start now, in execution order, at most `slots` of them;
  // each is counted as started.
  std::vector<std::size_t> start_ready(std::size_t slots);
  void finished(std::size_t step, bool ok);

  std::size_t running() const { return running_.size(); }
  // Every step started and finished, or settled.
  bool done() const;

 private:
  enum class State { pending, running, ok, failed, settled };
  void settle_what_is_decided();

  const PipelineSpec& spec_;
  std::vector<std::size_t> order_;
  std::vector<State> state_;
  std::vector<std::optional<std::size_t>> skip_cause_;
  std::set<std::size_t> running_;
  std::vector<Settled> settled_;
};

}  // namespace stepsnap::runner
