// A stream through a real pipe with the agent's buffered writer and reader
// (agent/volumes/stream_fd.h): the pipe is widened, a stream of records
// written piece by piece arrives whole and in order however the reader
// asks for it, and the end of input is seen.
#include "agent/volumes/stream_fd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>

#include "agent/volumes/send_stream.h"
#include "common/unique_fd.h"

namespace stepsnap::agent {
namespace {

TEST(StreamFd, WidensAPipeAndLeavesAFileAlone) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd r(fds[0]), w(fds[1]);
  widen_pipe(w.get());
  EXPECT_EQ(::fcntl(r.get(), F_GETPIPE_SZ), static_cast<int>(kStreamPipeBytes));
  UniqueFd file(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  widen_pipe(file.get());  // not a pipe: nothing to do, nothing fails
}

TEST(StreamFd, AStreamOfManyRecordsCrossesAPipeWhole) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd r(fds[0]), w(fds[1]);
  constexpr std::uint64_t kBlock = 4096;
  constexpr std::uint32_t kRuns = 700;  // several writer and reader buffers' worth
  StreamHeader h;
  h.block_bytes = kBlock;
  h.volume_bytes = kRuns * 2 * kBlock;
  h.data_blocks = kRuns;
  h.snapshot = {{"uuid", "0123456789abcdef0123456789abcdef"}, {"name", "s"}};

  std::thread writer_thread([&] {
    StreamWriter writer(w.get());
    StreamEncoder enc([&](std::span<const std::uint8_t> b) { return writer.write(b); });
    EXPECT_TRUE(enc.header(h));
    for (std::uint32_t i = 0; i < kRuns; ++i) {
      std::vector<std::uint8_t> data(kBlock, static_cast<std::uint8_t>(i));
      EXPECT_TRUE(enc.data(2 * i, 1, data));
    }
    EXPECT_TRUE(enc.end());
    EXPECT_TRUE(writer.flush());
    w.reset();
  });

  StreamReader reader(r.get());
  // The decoder asks for a byte, 12, a block, 4: pieces of what the
  // reader got from each read of the pipe.
  StreamDecoder dec([&](std::span<std::uint8_t> b) { return reader.read(b); });
  auto got = dec.header();
  ASSERT_TRUE(got) << got.error().message();
  std::uint32_t runs = 0;
  for (;;) {
    auto rec = dec.next();
    ASSERT_TRUE(rec) << rec.error().message();
    if (rec->kind == StreamRecord::Kind::end) break;
    ASSERT_EQ(rec->first_block, 2u * runs);
    ASSERT_EQ(rec->payload, std::vector<std::uint8_t>(kBlock, static_cast<std::uint8_t>(runs)));
    ++runs;
  }
  EXPECT_EQ(runs, kRuns);
  writer_thread.join();
  std::uint8_t byte;
  auto n = reader.read({&byte, 1});
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0u) << "the end of input";
}

TEST(StreamFd, AReadBiggerThanTheBufferGoesStraightThrough) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd r(fds[0]), w(fds[1]);
  widen_pipe(w.get());
  std::vector<std::uint8_t> sent(1000, 7);
  ASSERT_EQ(::write(w.get(), sent.data(), sent.size()), 1000);
  w.reset();
  StreamReader reader(r.get());
  std::vector<std::uint8_t> big(kStreamBufferBytes + 1);
  auto n = reader.read(big);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 1000u);
  EXPECT_EQ(std::vector<std::uint8_t>(big.begin(), big.begin() + 1000), sent);
}

}  // namespace
}  // namespace stepsnap::agent
