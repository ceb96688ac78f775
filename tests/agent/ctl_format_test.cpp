// stepsnapctl's human output (pure).
#include "agent/ctl_format.h"

#include <gtest/gtest.h>

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;

TEST(CtlFormat, TableAlignsColumnsAndTrimsTrailingSpaces) {
  std::string t = format_table({"NAME", "SIZE"}, {{"workspace", "1.0G"}, {"d", "512"}});
  EXPECT_EQ(t,
            "NAME       SIZE\n"
            "workspace  1.0G\n"
            "d          512\n");
}

TEST(CtlFormat, TableWithNoRowsIsTheHeader) { EXPECT_EQ(format_table({"A", "B"}, {}), "A  B\n"); }

TEST(CtlFormat, HumanBytes) {
  EXPECT_EQ(human_bytes(512), "512");
  EXPECT_EQ(human_bytes(1536), "1.5K");
  EXPECT_EQ(human_bytes(1ull << 30), "1.0G");
  EXPECT_EQ(human_bytes(64ull << 20), "64.0M");
}

TEST(CtlFormat, VolumeListIsATableWithPoolUsage) {
  json r = {{"volumes",
             {{{"name", "ws"},
               {"kind", "volume"},
               {"size_bytes", 1073741824},
               {"state", "created"},
               {"path", "/dev/mapper/p-vol-ws"},
               {"labels", {{"team", "ml"}}}}}},
            {"pool",
             {{"name", "p"},
              {"mode", "rw"},
              {"used_data_blocks", 10},
              {"total_data_blocks", 100},
              {"used_metadata_blocks", 1},
              {"total_metadata_blocks", 4}}}};
  std::string out = format_result("volume.list", r);
  EXPECT_EQ(out,
            "NAME  KIND    SIZE  STATE    DEVICE                LABELS\n"
            "ws    volume  1.0G  created  /dev/mapper/p-vol-ws  team=ml\n"
            "pool p: rw, data 10% used, metadata 25% used\n");
}

TEST(CtlFormat, EmptyResultSaysOk) {
  EXPECT_EQ(format_result("volume.delete", json::object()), "ok\n");
}

TEST(CtlFormat, EventIsOneLine) {
  json e = {{"seq", 42},
            {"time", "2024-05-01T12:00:00.000000001Z"},
            {"type", "step.finished"},
            {"data", {{"pipeline", "p"}, {"exit_status", 0}, {"post_snapshots", {"a"}}}}};
  EXPECT_EQ(format_event(e),
            "42 2024-05-01T12:00:00.000000001Z step.finished exit_status=0 pipeline=p "
            "post_snapshots=[\"a\"]");
}

TEST(CtlFormat, ErrorIsOneLineWithItsCode) {
  EXPECT_EQ(format_error({{"code", "invalid_value"}, {"message", "args.name: bad\nthing"}}),
            "args.name: bad thing [invalid_value]");
}

}  // namespace
}  // namespace stepsnap::agent
