// Faults under a live pool's metadata device (issue #14 item 8), inside the
// scripts/vm guest (label vm): the pool runs on a loop device for data and
// a dm-linear device over a loop device for metadata; the test swaps that
// table for dm-flakey erroring every write. The pool's next metadata commit
// fails and the kernel turns it read-only with needs_check: the agent must
// refuse new snapshots saying so, emit an event, and existing clones must
// stay readable.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "dm/dm_task.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent::vmtest {
namespace {

using namespace stepsnap::testing;
using json = nlohmann::json;

constexpr std::uint64_t kMetaSectors = 16 * 1024 * 1024 / 512;

class MetadataFault : public StepsnapdFixture {
 protected:
  MetadataFault() {
    if (!exists("/sys/module/dm_thin_pool")) return;  // SetUp skips
    char tmpl[] = "/tmp/stepsnap-metafault-XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    files_ = tmpl;
    sh("truncate -s 64M " + files_ + "/data && truncate -s 16M " + files_ + "/meta");
    data_loop_ = trim(sh("losetup -f --show " + files_ + "/data").out);
    meta_loop_ = trim(sh("losetup -f --show " + files_ + "/meta").out);
    meta_dm_ = "mf" + std::to_string(::getpid()) + "-meta";
    (void)dm::create_device(meta_dm_, {dm::Target{0, kMetaSectors, "linear", meta_loop_ + " 0"}});
    pool_args_ = {"--pool-data-device", data_loop_, "--pool-metadata-device",
                  dm::mapper_path(meta_dm_)};
  }
  ~MetadataFault() override {
    if (files_.empty()) return;
    (void)dm::remove_device(meta_dm_);
    sh("losetup -d " + data_loop_ + "; losetup -d " + meta_loop_);
    std::filesystem::remove_all(files_);
  }
  static std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }
  std::string sum(const std::string& dev) {
    return sh("head -c 4194304 " + dev + " | sha256sum").out;
  }
  // Volume v with 4 MiB of random data, its snapshot v.s and clone c of it:
  // the clone's device and the data's checksum.
  void make_clone_of_random_data(std::string& clone_dev, std::string& expected) {
    ASSERT_FALSE(data_loop_.empty());
    json vol = ok("volume.create", {{"name", "v"}, {"size_bytes", 16 << 20}});
    const std::string dev = vol.value("path", "");
    ASSERT_FALSE(dev.empty()) << vol.dump();
    ASSERT_EQ(sh("head -c 4194304 /dev/urandom > " + files_ + "/pattern && dd if=" + files_ +
                 "/pattern of=" + dev + " bs=1M oflag=direct conv=notrunc status=none")
                  .rc,
              0);
    expected = sum(files_ + "/pattern");
    ok("snapshot.create", {{"volume", "v"}, {"name", "v.s"}});
    json clone = ok("clone.create", {{"snapshot", "v.s"}, {"name", "c"}});
    clone_dev = clone.value("path", "");
    ASSERT_EQ(sum(clone_dev), expected);
  }
  // The fault: the metadata device's table swapped under the live pool.
  void swap_metadata_target(const dm::Target& target) {
    auto loaded = dm::load_table(meta_dm_, {target});
    ASSERT_TRUE(loaded) << loaded.error().message();
    ASSERT_TRUE(dm::suspend(meta_dm_));
    ASSERT_TRUE(dm::resume(meta_dm_));
  }
  bool pool_error_evented() {
    for (const auto& e : events_of("error"))
      if (e["data"].value("pool", "") == pool_) return true;
    return false;
  }

  std::string files_, data_loop_, meta_loop_, meta_dm_;
};

TEST_F(MetadataFault, WritesFailingUnderThePoolsMetadataStopSnapshotsAndKeepClonesReadable) {
  std::string clone_dev, expected;
  ASSERT_NO_FATAL_FAILURE(make_clone_of_random_data(clone_dev, expected));

  // Every write to the metadata device fails from now on; reads work.
  ASSERT_NO_FATAL_FAILURE(
      swap_metadata_target({0, kMetaSectors, "flakey", meta_loop_ + " 0 0 3600 1 error_writes"}));

  json refused = call("snapshot.create", {{"volume", "v"}, {"name", "after"}});
  ASSERT_FALSE(refused.value("ok", true)) << refused.dump();
  std::cout << "refused: " << refused["error"].dump() << "\n";
  json again = call("snapshot.create", {{"volume", "v"}, {"name", "after2"}});
  ASSERT_FALSE(again.value("ok", true)) << again.dump();
  const std::string why = again["error"].value("message", "");
  EXPECT_TRUE(why.find("needs_check") != std::string::npos ||
              why.find("read_only") != std::string::npos)
      << "the refusal does not say what is wrong with the pool: " << again.dump();
  EXPECT_TRUE(pool_error_evented()) << "no error event for the pool's trouble";
  json pool = ok("volume.list", json::object())["pool"];
  std::cout << "pool: " << pool.dump() << "\n";
  EXPECT_NE(pool.value("mode", ""), "rw") << pool.dump();

  // What was made before the fault is still there to read.
  EXPECT_EQ(sum(clone_dev), expected) << "the clone is no longer readable";
  EXPECT_TRUE(ok("snapshot.list", json::object())["snapshots"].size() == 1u);
}

// dm-error instead of dm-flakey: every read and write of the metadata
// device fails from now on, and the kernel fails the pool (mode Fail, no
// transaction id, no numbers). The agent refuses new snapshots saying the
// pool failed (it used to say "resync the catalog", from the transaction id
// 0 a failed pool reports), with an event; what was made before is still
// listed. A failed pool errors all I/O, reads of existing clones included.
TEST_F(MetadataFault, AnErroringMetadataDeviceStopsSnapshotsAndSaysWhy) {
  std::string clone_dev, expected;
  ASSERT_NO_FATAL_FAILURE(make_clone_of_random_data(clone_dev, expected));

  ASSERT_NO_FATAL_FAILURE(swap_metadata_target({0, kMetaSectors, "error", ""}));

  json refused = call("snapshot.create", {{"volume", "v"}, {"name", "after"}});
  ASSERT_FALSE(refused.value("ok", true)) << refused.dump();
  std::cout << "refused: " << refused["error"].dump() << "\n";
  json again = call("snapshot.create", {{"volume", "v"}, {"name", "after2"}});
  ASSERT_FALSE(again.value("ok", true)) << again.dump();
  std::cout << "again: " << again["error"].dump() << "\n";
  const std::string why = again["error"].value("message", "");
  EXPECT_NE(why.find("pool_failed"), std::string::npos)
      << "the refusal does not say what is wrong with the pool: " << again.dump();
  EXPECT_EQ(again["error"].value("code", ""), "pool_read_only") << again.dump();
  EXPECT_TRUE(pool_error_evented()) << "no error event for the pool's trouble";
  json pool = ok("volume.list", json::object())["pool"];
  std::cout << "pool: " << pool.dump() << "\n";
  EXPECT_EQ(pool.value("mode", ""), "Fail") << pool.dump();
  EXPECT_TRUE(ok("snapshot.list", json::object())["snapshots"].size() == 1u);
  // Reading the clone needs its mappings, which the pool may have cached or
  // may no longer read: what the kernel does is printed, not asserted.
  std::cout << "clone after the fault: "
            << (sum(clone_dev) == expected ? "readable, same data" : "not readable as before")
            << "\n";
}

}  // namespace
}  // namespace stepsnap::agent::vmtest
