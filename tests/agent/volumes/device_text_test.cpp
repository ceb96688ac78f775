// A device written as text (device_text.h) is byte for byte what
// device_json(...).dump() wrote before it, for every member a record can
// have, escaping and non-ASCII text included; a page of them is the list
// answer's object dumped.
#include "agent/volumes/device_text.h"

#include <gtest/gtest.h>

#include "agent/volumes/volumes.h"

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;

std::string dumped(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::vector<DeviceRecord> records() {
  std::vector<DeviceRecord> out;
  DeviceRecord bare;  // every optional member absent, zeros
  out.push_back(bare);

  DeviceRecord volume;
  volume.id = 7;
  volume.pool_id = 1;
  volume.name = "ws";
  volume.kind = DeviceKind::volume;
  volume.thin_id = 16777215;
  volume.state = DeviceState::created;
  volume.dm_name = "pool0-vol-ws";
  volume.size_bytes = 18446744073709551615ULL;
  volume.mapped_bytes = 65536;
  volume.created_ns = 1714564800123456789LL;
  volume.labels = {{"team", "ml"}, {"z", ""}, {"quote\"key", "back\\slash"}, {"é", "日本"}};
  volume.owner_uid = 4294967295u;
  volume.uuid = "0123456789abcdef0123456789abcdef";
  volume.run_clone = RunCloneKey{"pipe", "run-1", "ws"};
  out.push_back(volume);

  DeviceRecord snap;
  snap.id = 9007199254740993LL;
  snap.name = "ws-pre \x01\x1f\t\n\r\b\f\x7f end 😀 \u2028";
  snap.kind = DeviceKind::snapshot;
  snap.origin_id = 7;
  snap.parent_id = 8;
  snap.state = DeviceState::faulty;
  snap.fault = "create failed: \"EBUSY\" on </script>";
  snap.created_ns = -1;
  snap.step = StepInfo{"pipe", "run-1", "train", Phase::post, "python3 -c 'print(\"x\")'", -9};
  snap.received_from = R"({"node":"n1","pool":"p","snapshot":"s","parent_uuid":null})";
  out.push_back(snap);

  DeviceRecord pre = snap;
  pre.step = StepInfo{"pipe", "run-1", "train", Phase::pre, "", std::nullopt};
  pre.received_from = "not json";  // dropped, as device_json drops it
  out.push_back(pre);

  DeviceRecord initial = snap;
  initial.step = StepInfo{"p", "r", "", Phase::initial, "", 0};
  initial.received_from.clear();
  out.push_back(initial);

  DeviceRecord clone;
  clone.id = 3;
  clone.kind = DeviceKind::clone;
  clone.name = "c";
  clone.state = DeviceState::deleting;
  clone.dm_name = "pool0-vol-c";
  out.push_back(clone);
  return out;
}

TEST(DeviceText, EachDeviceIsTheBytesOfItsJsonDumped) {
  for (const auto& d : records()) {
    for (const std::string origin : {"", "ws", "orígin \"q\""}) {
      std::string text;
      append_device_json(text, d, origin);
      EXPECT_EQ(text, dumped(device_json(d, origin))) << d.name;
    }
  }
}

TEST(DeviceText, AStringThatIsNotUtf8FallsBackToTheDumpsReplacement) {
  for (const char* bad : {"\xff", "a\xc3", "\xed\xa0\x80 surrogate", "\xc0\xaf overlong",
                          "\xf4\x90\x80\x80 too high", "\xe2\x82"}) {
    DeviceRecord d = records()[1];
    d.labels["bad"] = bad;
    std::string text = "[";
    append_device_json(text, d);
    EXPECT_EQ(text, "[" + dumped(device_json(d))) << bad;
    std::string s;
    EXPECT_FALSE(append_json_string(s, bad));
    EXPECT_TRUE(s.empty()) << "out is left as it was";
  }
  std::string s;
  for (const char* good : {"\xc2\x80", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xf0\x90\x80\x80",
                           "\xf4\x8f\xbf\xbf", "\x7f", ""}) {
    s.clear();
    EXPECT_TRUE(append_json_string(s, good));
    EXPECT_EQ(s, dumped(json(good)));
  }
}

TEST(DeviceText, APageIsTheListObjectDumped) {
  const auto devices = records();
  const json pool = {{"name", "pool0"}, {"data_percent", 12.5}, {"block_bytes", 65536}};
  for (const char* key : {"snapshots", "volumes"}) {
    for (bool more : {false, true}) {
      for (const json* p : {static_cast<const json*>(nullptr), &pool}) {
        json list = json::array();
        for (const auto& d : devices) list.push_back(device_json(d));
        json expected = {{key, list}};
        std::optional<std::string> next_after;
        if (more) {
          next_after = devices.back().name;
          expected["next_after"] = *next_after;
        }
        if (p) expected["pool"] = *p;
        EXPECT_EQ(device_page_text(devices, key, next_after, p), dumped(expected));
      }
    }
    EXPECT_EQ(device_page_text({}, key, std::nullopt), dumped(json{{key, json::array()}}));
  }
}

}  // namespace
}  // namespace stepsnap::agent
