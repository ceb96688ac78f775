// ApiClient::read over a real Unix socket: every answer line exactly once,
// in order, however the daemon's writes cut them (a page of events comes in
// one write of many lines; a long line across several).
#include "protocol/api_client.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>

namespace stepsnap::protocol {
namespace {

using json = nlohmann::json;

TEST(ApiClient, ReadsEveryLineOnceWhateverTheChunks) {
  std::string dir = (std::filesystem::temp_directory_path() / "stepsnap-client-XXXXXX").string();
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  const std::string path = dir + "/sock";
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 1), 0);

  // 3,000 lines, some of 100 KiB, written in pieces that cut lines anywhere.
  std::string all;
  for (int i = 0; i < 3000; ++i) {
    json line = {{"seq", i}, {"pad", std::string(i % 500 == 0 ? 100000 : i % 37, 'x')}};
    all += line.dump() + "\n";
  }
  std::thread server([&] {
    int fd = ::accept(listener, nullptr, nullptr);
    std::size_t off = 0, piece = 1;
    while (off < all.size()) {
      std::size_t n = std::min(piece, all.size() - off);
      ASSERT_EQ(::write(fd, all.data() + off, n), static_cast<ssize_t>(n));
      off += n;
      piece = piece * 7 % 200003 + 1;  // 1 byte up to about 200 KB
    }
    ::close(fd);
  });
  auto client = ApiClient::connect(path);
  ASSERT_TRUE(client) << client.error().message();
  for (int i = 0; i < 3000; ++i) {
    auto line = client->read();
    ASSERT_TRUE(line) << "line " << i << ": " << line.error().message();
    ASSERT_EQ((*line)["seq"], i);
    ASSERT_EQ((*line)["pad"].get<std::string>().size(), i % 500 == 0 ? 100000u : i % 37u);
  }
  auto end = client->read();
  EXPECT_FALSE(end) << "nothing after the last line";
  server.join();
  ::close(listener);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace stepsnap::protocol
