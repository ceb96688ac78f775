// The view's HTML pages, each from the JSON the API serves for the same
// thing (view_store.h), so page and API never disagree. Pure.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace stepsnap::agent {

// runs: one page of run summaries; next_href: the next page's address
// (empty: this is the last page).
std::string runs_page(const nlohmann::json& runs, const std::string& next_href = "");
std::string run_page(const nlohmann::json& run);
std::string snapshot_page(const nlohmann::json& snapshot);

struct PoolView {
  nlohmann::json volumes;         // one page of volume.list's devices
  std::string volumes_next_href;  // the next page of them; empty: the last
  nlohmann::json pool;            // name, block_bytes, status (or status_error)
  nlohmann::json space_events;    // pool.low_space / pool.out_of_space events, oldest first
  nlohmann::json samples;  // pool.usage: [{time_ns, data_percent, metadata_percent}], oldest first
  unsigned low_space_percent = 0;
};
std::string pool_page(const PoolView& view);
std::string live_page();
// "<p class="next"><a id="next-page" href=...>next page</a></p>", href
// escaped; empty for an empty href.
std::string next_page_link(const std::string& href);
// what: "run", "snapshot", ...; name: what was asked for (escaped here).
std::string not_found_page(const std::string& what, const std::string& name,
                           const std::string& why);

// The command that starts a new run from this run's pre-snapshots of step:
// runner pipeline run FILE --restore RUN --from-step STEP. file is the
// pipeline file the runner recorded (label stepsnap.pipeline_file), or empty.
std::string restore_command(const std::string& file, const std::string& run,
                            const std::string& step);

}  // namespace stepsnap::agent
