// The authorisation table of docs/security.md, as the code has it.
#include "agent/api/authz.h"

#include <gtest/gtest.h>

namespace stepsnap::agent {
namespace {

using protocol::Op;

constexpr uid_t kServer = 0;  // stepsnapd runs as root
const PeerCred kRoot{1, 0, 0, {}};
const PeerCred kMember{1, 1001, 1001, {4242}};

TEST(AuthzTable, ReadsAndCreatesAreForMembersDestroyingForOwnersStepsForRoot) {
  for (Op op : {Op::volume_list, Op::snapshot_list, Op::snapshot_show, Op::step_status,
                Op::run_show, Op::events_subscribe, Op::volume_create}) {
    EXPECT_EQ(access_for(op), Access::member) << protocol::to_string(op);
  }
  for (Op op : {Op::volume_delete, Op::snapshot_create, Op::snapshot_delete, Op::snapshot_label,
                Op::clone_create, Op::restore}) {
    EXPECT_EQ(access_for(op), Access::owner) << protocol::to_string(op);
  }
  for (Op op : {Op::step_register, Op::run_clone}) {
    EXPECT_EQ(access_for(op), Access::admin) << protocol::to_string(op);
  }
}

TEST(AuthzTable, RetentionRulesAreReadByMembersSetAndSweptByRoot) {
  EXPECT_EQ(access_for(Op::retention_show), Access::member);
  EXPECT_FALSE(check_op(Op::retention_show, kMember, kServer));
  for (Op op : {Op::retention_set, Op::gc}) {
    EXPECT_EQ(access_for(op), Access::admin) << protocol::to_string(op);
    auto refused = check_op(op, kMember, kServer);
    ASSERT_TRUE(refused) << protocol::to_string(op);
    EXPECT_EQ(refused->code, "forbidden");
    EXPECT_FALSE(check_op(op, kRoot, kServer));
  }
}

TEST(AuthzTable, EveryOpHasARowOrIsRootOnly) {
  // An op added to protocol/ without a row here is root-only until someone
  // decides: the table fails closed.
  for (int i = 0; i <= static_cast<int>(Op::events_subscribe); ++i) {
    auto op = static_cast<Op>(i);
    auto name = protocol::to_string(op);
    ASSERT_TRUE(protocol::parse_op(name)) << name;
    if (access_for(op) == Access::admin) {
      EXPECT_TRUE(check_op(op, kRoot, kServer) == std::nullopt) << name;
      EXPECT_TRUE(check_op(op, kMember, kServer)) << name;
    }
  }
}

TEST(AuthzCheck, RootOnlyOpsAreForbiddenToMembersWithOneLineSayingWho) {
  auto refused = check_op(Op::step_register, kMember, kServer);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code, "forbidden");
  EXPECT_EQ(refused->message,
            "step.register: only root may do this, not uid 1001; run it as root (for steps: "
            "through runner exec)");
  EXPECT_EQ(refused->message.find('\n'), std::string::npos);
  EXPECT_TRUE(check_op(Op::run_clone, kMember, kServer));
  EXPECT_FALSE(check_op(Op::step_register, kRoot, kServer));
  EXPECT_FALSE(check_op(Op::volume_delete, kMember, kServer)) << "owners are checked later";
  EXPECT_FALSE(check_op(Op::volume_list, kMember, kServer));
}

TEST(AuthzCheck, OwnerOpsNeedTheOwnerOrRoot) {
  EXPECT_FALSE(check_owner(Op::volume_delete, kMember, kServer, 1001, "volume ws"));
  EXPECT_FALSE(check_owner(Op::volume_delete, kRoot, kServer, 1001, "volume ws"));
  auto refused = check_owner(Op::volume_delete, kMember, kServer, 0, "volume ws");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code, "forbidden");
  EXPECT_NE(refused->message.find("volume.delete on volume ws: only its owner (uid 0) or root"),
            std::string::npos)
      << refused->message;
  EXPECT_TRUE(check_owner(Op::clone_create, kMember, kServer, 1002, "snapshot s"));
}

TEST(AuthzCheck, TheDaemonsOwnUidIsAnAdmin) {
  // An unprivileged test instance of the server talks to itself.
  const PeerCred self{1, 1500, 1500, {}};
  EXPECT_TRUE(is_admin(self, 1500));
  EXPECT_FALSE(check_op(Op::step_register, self, 1500));
  EXPECT_FALSE(is_admin(kMember, 1500));
}

}  // namespace
}  // namespace stepsnap::agent
