#include "agent/view/listen_address.h"

#include <gtest/gtest.h>

namespace stepsnap::agent {
namespace {

TEST(ListenAddress, DefaultIsLoopback) {
  auto a = parse_listen_address(kDefaultHttpListen);
  ASSERT_TRUE(a && *a);
  EXPECT_EQ((*a)->host, "127.0.0.1");
  EXPECT_EQ((*a)->port, 9477);
  EXPECT_TRUE((*a)->loopback);
}

TEST(ListenAddress, EmptyTurnsTheViewOff) {
  auto a = parse_listen_address("");
  ASSERT_TRUE(a);
  EXPECT_FALSE(*a);
}

TEST(ListenAddress, TellsLoopbackFromExposed) {
  for (const char* loop : {"127.0.0.1:1", "127.3.2.1:80", "[::1]:9477", "localhost:9477"}) {
    auto a = parse_listen_address(loop);
    ASSERT_TRUE(a && *a) << loop;
    EXPECT_TRUE((*a)->loopback) << loop;
  }
  for (const char* open : {"0.0.0.0:9477", "10.1.2.3:9477", "[::]:9477", "[fe80::1]:80"}) {
    auto a = parse_listen_address(open);
    ASSERT_TRUE(a && *a) << open;
    EXPECT_FALSE((*a)->loopback) << open;
  }
  EXPECT_EQ((*parse_listen_address("[::1]:9477"))->text(), "[::1]:9477");
}

TEST(ListenAddress, RefusesWhatIsNotAddressAndPort) {
  for (const char* bad : {"9477", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "::1:80",
                          "[::1]9477", "example.com:80", "127.0.0.1:-1", "127.0.0.1:80x"}) {
    auto a = parse_listen_address(bad);
    ASSERT_FALSE(a) << bad;
    EXPECT_NE(a.error().message().find("--http-listen"), std::string::npos) << a.error().message();
  }
}

}  // namespace
}  // namespace stepsnap::agent
