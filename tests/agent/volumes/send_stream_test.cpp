// The send stream's encoder and decoder (pure logic): a stream round-trips,
// and every kind of damage a transfer can do is refused with a message
// naming it, before a receiver would write a byte of the damaged record.
#include "agent/volumes/send_stream.h"

#include <gtest/gtest.h>

#include <cstring>

namespace stepsnap::agent {
namespace {

constexpr std::uint64_t kBlock = 4096;

StreamHeader sample_header(std::uint64_t data_blocks, std::uint64_t zero_blocks) {
  StreamHeader h;
  h.block_bytes = kBlock;
  h.volume_bytes = 64 * kBlock;
  h.data_blocks = data_blocks;
  h.zero_blocks = zero_blocks;
  h.snapshot = {{"uuid", "0123456789abcdef0123456789abcdef"},
                {"name", "run1.train.ws.post"},
                {"step", {{"pipeline", "p"}, {"run", "run1"}, {"step", "train"}}}};
  h.base = {{"uuid", "fedcba9876543210fedcba9876543210"}, {"name", "run1.train.ws.pre"}};
  h.source = {{"node", "node-a"}, {"pool", "pa"}};
  return h;
}

std::vector<std::uint8_t> blocks(std::uint32_t count, std::uint8_t fill) {
  return std::vector<std::uint8_t>(count * kBlock, fill);
}

// A stream with two data runs and a zero run.
std::vector<std::uint8_t> encode_sample() {
  std::vector<std::uint8_t> out;
  StreamEncoder enc([&](std::span<const std::uint8_t> b) -> Status {
    out.insert(out.end(), b.begin(), b.end());
    return {};
  });
  EXPECT_TRUE(enc.header(sample_header(3, 4)));
  EXPECT_TRUE(enc.data(0, 2, blocks(2, 0xab)));
  EXPECT_TRUE(enc.zero(10, 4));
  EXPECT_TRUE(enc.data(63, 1, blocks(1, 0x5c)));
  EXPECT_TRUE(enc.end());
  EXPECT_EQ(enc.bytes_written(), out.size());
  return out;
}

ByteSource from(const std::vector<std::uint8_t>& bytes) {
  auto at = std::make_shared<std::size_t>(0);
  return [&bytes, at](std::span<std::uint8_t> out) -> Result<std::size_t> {
    // Short reads on purpose, as a pipe gives them.
    std::size_t n = std::min({out.size(), bytes.size() - *at, std::size_t{1000}});
    std::memcpy(out.data(), bytes.data() + *at, n);
    *at += n;
    return n;
  };
}

// Decodes to the end; the first error's message, or "" when all is well.
std::string decode_all(const std::vector<std::uint8_t>& bytes,
                       std::vector<StreamRecord>* records = nullptr) {
  StreamDecoder dec(from(bytes));
  auto h = dec.header();
  if (!h) return h.error().message();
  for (;;) {
    auto r = dec.next();
    if (!r) return r.error().message();
    if (records) records->push_back(*r);
    if (r->kind == StreamRecord::Kind::end) return "";
  }
}

TEST(SendStream, RoundTripsHeaderAndRecords) {
  auto bytes = encode_sample();
  StreamDecoder dec(from(bytes));
  auto h = dec.header();
  ASSERT_TRUE(h) << h.error().message();
  EXPECT_EQ(h->block_bytes, kBlock);
  EXPECT_EQ(h->volume_bytes, 64 * kBlock);
  EXPECT_TRUE(h->incremental());
  EXPECT_EQ(h->snapshot["step"]["step"], "train");
  EXPECT_EQ(h->base["uuid"], "fedcba9876543210fedcba9876543210");
  EXPECT_EQ(h->source["node"], "node-a");

  std::vector<StreamRecord> records;
  ASSERT_EQ(decode_all(bytes, &records), "");
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[0].kind, StreamRecord::Kind::data);
  EXPECT_EQ(records[0].first_block, 0u);
  EXPECT_EQ(records[0].payload, blocks(2, 0xab));
  EXPECT_EQ(records[1].kind, StreamRecord::Kind::zero);
  EXPECT_EQ(records[1].first_block, 10u);
  EXPECT_EQ(records[1].count, 4u);
  EXPECT_EQ(records[2].payload, blocks(1, 0x5c));
  EXPECT_EQ(records[3].kind, StreamRecord::Kind::end);
}

TEST(SendStream, OverheadIsTheHeaderAndSeventeenBytesPerRun) {
  auto bytes = encode_sample();
  std::string header_text = sample_header(3, 4).to_json().dump();
  std::size_t expected = 16 + header_text.size() + 4  // magic, version, length, JSON, crc
                         + 2 * (kDataRecordOverhead) + 3 * kBlock  // two data runs
                         + 1 + 8 + 4 + 4                           // a zero run
                         + 1 + 16 + 4 + 4;                         // the end
  EXPECT_EQ(bytes.size(), expected);
}

TEST(SendStream, EveryTruncationIsRefused) {
  auto bytes = encode_sample();
  for (std::size_t cut = 0; cut < bytes.size(); cut += (cut < 200 ? 1 : 397)) {
    std::vector<std::uint8_t> part(bytes.begin(), bytes.begin() + static_cast<long>(cut));
    std::string error = decode_all(part);
    EXPECT_NE(error, "") << "cut at " << cut;
    EXPECT_NE(error.find("truncated"), std::string::npos) << error;
  }
}

TEST(SendStream, EveryFlippedByteIsRefused) {
  auto bytes = encode_sample();
  for (std::size_t at = 0; at < bytes.size(); at += (at < 300 ? 1 : 131)) {
    auto bad = bytes;
    bad[at] ^= 0x01;
    EXPECT_NE(decode_all(bad), "") << "byte " << at << " flipped and accepted";
  }
}

TEST(SendStream, ADroppedRecordIsRefusedByTheStreamChecksum) {
  auto bytes = encode_sample();
  // Cut out the zero run (17 bytes after the first data run): each record
  // is intact, only the whole-stream checksum can tell.
  std::string header_text = sample_header(3, 4).to_json().dump();
  std::size_t zero_at = 16 + header_text.size() + 4 + kDataRecordOverhead + 2 * kBlock;
  ASSERT_EQ(bytes[zero_at], 'Z');
  bytes.erase(bytes.begin() + static_cast<long>(zero_at),
              bytes.begin() + static_cast<long>(zero_at + 17));
  EXPECT_NE(decode_all(bytes).find("whole-stream checksum"), std::string::npos);
}

TEST(SendStream, TrailingBytesAndWrongMagicAreRefused) {
  auto bytes = encode_sample();
  bytes.push_back(0);
  EXPECT_NE(decode_all(bytes).find("after the end"), std::string::npos);
  std::vector<std::uint8_t> text(100, 'x');
  EXPECT_NE(decode_all(text).find("not a stepsnap send stream"), std::string::npos);
}

TEST(SendStream, RunsOutsideTheVolumeAreRefused) {
  std::vector<std::uint8_t> out;
  StreamEncoder enc([&](std::span<const std::uint8_t> b) -> Status {
    out.insert(out.end(), b.begin(), b.end());
    return {};
  });
  ASSERT_TRUE(enc.header(sample_header(1, 2)));
  ASSERT_TRUE(enc.zero(63, 2));  // the volume has 64 blocks: 63..64 is past it
  EXPECT_NE(decode_all(out).find("does not fit the volume"), std::string::npos);
}

TEST(SendStream, HeaderFieldsAreChecked) {
  auto j = sample_header(1, 0).to_json();
  j["block_bytes"] = 3000;
  EXPECT_FALSE(header_from_json(j));
  j = sample_header(1, 0).to_json();
  j["snapshot"].erase("uuid");
  EXPECT_FALSE(header_from_json(j));
  j = sample_header(1, 0).to_json();
  j["data_blocks"] = 65;
  EXPECT_FALSE(header_from_json(j));
  j = sample_header(1, 0).to_json();
  j["base"] = nullptr;
  auto h = header_from_json(j);
  ASSERT_TRUE(h);
  EXPECT_FALSE(h->incremental());
}

TEST(SendStream, Crc32cMatchesTheStandardCheckValue) {
  const char* text = "123456789";
  EXPECT_EQ(crc32c({reinterpret_cast<const std::uint8_t*>(text), 9}), 0xE3069283u);
}

}  // namespace
}  // namespace stepsnap::agent
