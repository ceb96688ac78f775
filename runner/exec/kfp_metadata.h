// KFP's Visualizations for one step: the mlpipeline-ui-metadata JSON that
// Kubeflow Pipelines' UI renders in the step's Visualizations tab. One
// markdown output names the step's pre- and post-snapshots and links each
// to its page in stepsnapd's HTTP view: Kale's snapshot acknowledgement.
//
// Format (KFP v1 output viewers): {"outputs":[{"type":"markdown",
// "storage":"inline","source":"<markdown>"}]}.
#pragma once

#include <string>
#include <vector>

#include "common/error.h"
#include "runner/exec/agent_client.h"

namespace stepsnap::runner {

// Where links point when --view-url is not given: stepsnapd's default
// --http-listen. A browser elsewhere needs the node's reachable address.
inline constexpr const char* kDefaultViewUrl = "http://127.0.0.1:9477";

std::string kfp_ui_metadata(const StepRef& ref, const std::vector<std::string>& pre,
                            const std::vector<std::string>& post, const std::string& view_url);

// Writes text to path through a temporary file in the same directory and a
// rename, so KFP never picks up half a file.
Status write_file_atomically(const std::string& path, const std::string& text);

// A path the metadata can be written to later: its directory exists.
Status check_output_path(const std::string& option, const std::string& path);

}  // namespace stepsnap::runner
