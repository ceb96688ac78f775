// stepsnap-csi's command line.
#include "csi/options.h"

#include <gtest/gtest.h>

#include <vector>

namespace stepsnap::csi {
namespace {

Result<std::variant<CsiOptions, HelpRequested>> parse(std::vector<const char*> args) {
  args.insert(args.begin(), "stepsnap-csi");
  return parse_csi_options(static_cast<int>(args.size()), args.data());
}

TEST(CsiOptions, TheEndpointIsAUnixSocketPath) {
  auto r = parse({"--endpoint", "unix:///csi/csi.sock", "--node-id", "node-1", "--kubelet-dir",
                  "/var/lib/kubelet/"});
  ASSERT_TRUE(r) << r.error().message();
  const auto& o = std::get<CsiOptions>(*r);
  EXPECT_EQ(o.endpoint, "/csi/csi.sock");
  EXPECT_EQ(o.node_id, "node-1");
  EXPECT_EQ(o.kubelet_dir, "/var/lib/kubelet");
  EXPECT_EQ(o.agent_socket, "/run/stepsnap/stepsnapd.sock");
  EXPECT_EQ(*parse_endpoint("unix:/a/b.sock"), "/a/b.sock");
}

TEST(CsiOptions, MistakesAreOneLineNamingTheOption) {
  auto tcp = parse({"--endpoint", "tcp://127.0.0.1:10000", "--node-id", "n"});
  ASSERT_FALSE(tcp);
  EXPECT_NE(tcp.error().message().find("unix:///"), std::string::npos) << tcp.error().message();
  auto relative = parse({"--endpoint", "unix://csi.sock", "--node-id", "n"});
  ASSERT_FALSE(relative);
  auto no_node = parse({"--endpoint", "unix:///csi.sock"});
  ASSERT_FALSE(no_node);
  EXPECT_NE(no_node.error().message().find("--node-id"), std::string::npos);
  auto bad_node = parse({"--endpoint", "unix:///csi.sock", "--node-id", "a/b"});
  ASSERT_FALSE(bad_node);
  auto root = parse({"--endpoint", "unix:///csi.sock", "--node-id", "n", "--kubelet-dir", "/"});
  ASSERT_FALSE(root);
  auto unknown = parse({"--endpoint", "unix:///csi.sock", "--node-id", "n", "--frobnicate"});
  ASSERT_FALSE(unknown);
  for (const auto& r : {tcp, relative, no_node, bad_node, root, unknown})
    EXPECT_EQ(r.error().message().find('\n'), std::string::npos) << r.error().message();
}

TEST(CsiOptions, HelpListsEveryOption) {
  auto r = parse({"--help"});
  ASSERT_TRUE(r);
  const auto& text = std::get<HelpRequested>(*r).text;
  for (const char* o : {"--endpoint", "--agent-socket", "--node-id", "--kubelet-dir"})
    EXPECT_NE(text.find(o), std::string::npos) << o;
}

TEST(CsiOptions, StepPodOptionsAreCheckedAndNormalised) {
  auto r = parse({"--endpoint", "unix:///csi.sock", "--node-id", "n", "--kube-api",
                  "https://10.0.0.1:6443", "--cgroup-driver", "cgroupfs", "--kubepods-parent",
                  "/sys/fs/cgroup/"});
  ASSERT_TRUE(r) << r.error().message();
  const auto& o = std::get<CsiOptions>(*r);
  EXPECT_EQ(o.kube_api, "https://10.0.0.1:6443");
  EXPECT_EQ(o.cgroup_driver, "cgroupfs");
  EXPECT_EQ(o.kubepods_parent, "/sys/fs/cgroup");
  EXPECT_EQ(o.kube_token_file, "/var/run/secrets/kubernetes.io/serviceaccount/token");
  auto driver = parse({"--endpoint", "unix:///csi.sock", "--node-id", "n", "--cgroup-driver", "x"});
  ASSERT_FALSE(driver);
  EXPECT_NE(driver.error().message().find("--cgroup-driver"), std::string::npos);
  auto parent =
      parse({"--endpoint", "unix:///csi.sock", "--node-id", "n", "--kubepods-parent", "sys"});
  ASSERT_FALSE(parent);
  EXPECT_NE(parent.error().message().find("--kubepods-parent"), std::string::npos);
}

}  // namespace
}  // namespace stepsnap::csi
