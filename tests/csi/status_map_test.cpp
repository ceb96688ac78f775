// stepsnapd's error codes as the CSI spec's gRPC codes.
#include "csi/status_map.h"

#include <gtest/gtest.h>

namespace stepsnap::csi {
namespace {

using grpc::StatusCode;

TEST(CsiStatusMap, AgentCodesMapOntoTheSpecsCodes) {
  EXPECT_EQ(code_for_agent_error("not_found"), StatusCode::NOT_FOUND);
  EXPECT_EQ(code_for_agent_error("exists"), StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(code_for_agent_error("no_space"), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(code_for_agent_error("busy"), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(code_for_agent_error("pool_read_only"), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(code_for_agent_error("invalid_value"), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code_for_agent_error("missing_field"), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code_for_agent_error("forbidden"), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(code_for_agent_error("internal"), StatusCode::INTERNAL);
  EXPECT_EQ(code_for_agent_error(""), StatusCode::UNAVAILABLE) << "no answer: the CO retries";
}

TEST(CsiStatusMap, TheMessageSaysWhatWasDoneAndTheAgentsWords) {
  Error e{"stepsnapd volume.create", "", 0, "pool is out of data space"};
  e.kind = "no_space";
  auto c = from_agent_error("create volume pvc-1", e);
  EXPECT_EQ(c.code, StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(c.message.find("create volume pvc-1: "), std::string::npos) << c.message;
  EXPECT_NE(c.message.find("out of data space"), std::string::npos) << c.message;
  EXPECT_EQ(grpc_code_name(StatusCode::ALREADY_EXISTS), "ALREADY_EXISTS");
}

}  // namespace
}  // namespace stepsnap::csi
