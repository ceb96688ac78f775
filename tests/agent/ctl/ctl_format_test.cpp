// stepsnapctl's human output (pure).
#include "agent/ctl/ctl_format.h"

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

TEST(CtlFormat, BytesTextHasHumanUnitsAndExactBytes) {
  EXPECT_EQ(bytes_text(512), "512 bytes");
  EXPECT_EQ(bytes_text(1ull << 30), "1.0G (1073741824 bytes)");
}

TEST(CtlFormat, Durations) {
  EXPECT_EQ(format_duration(400'000), "400us");
  EXPECT_EQ(format_duration(850'000'000), "850ms");
  EXPECT_EQ(format_duration(12'340'000'000), "12.3s");
  EXPECT_EQ(format_duration(59'990'000'000), "59.9s");
  EXPECT_EQ(format_duration(245'000'000'000), "4m05s");
  EXPECT_EQ(format_duration(3'720'000'000'000), "1h02m");
  EXPECT_EQ(format_duration(-1), "-");
}

TEST(CtlFormat, ParsesTheApisTimes) {
  EXPECT_EQ(parse_rfc3339_ns("1970-01-01T00:00:01.000000002Z"), 1'000'000'002);
  EXPECT_EQ(parse_rfc3339_ns("2024-05-01T12:00:00Z"), 1714564800ll * 1'000'000'000);
  EXPECT_EQ(parse_rfc3339_ns("2024-05-01T12:00:00.5Z"), 1714564800ll * 1'000'000'000 + 500'000'000);
  EXPECT_FALSE(parse_rfc3339_ns("2024-05-01T12:00:00+02:00"));
  EXPECT_FALSE(parse_rfc3339_ns("2024-05-01T12:00:00.Z"));
  EXPECT_FALSE(parse_rfc3339_ns("yesterday"));
  EXPECT_FALSE(parse_rfc3339_ns(""));
}

// What snapshot.show answers for a post-snapshot (agent/handler.cpp).
json post_snapshot() {
  return {{"id", 7},
          {"name", "r1.train.ws.post"},
          {"kind", "snapshot"},
          {"state", "created"},
          {"thin_id", 9},
          {"size_bytes", 1073741824},
          {"mapped_bytes", 3145728},
          {"created", "2024-05-01T12:00:05.000000000Z"},
          {"labels", {{"team", "ml"}, {"zone", "a"}}},
          {"origin_id", 2},
          {"origin", "ws"},
          {"origin_snapshot", "ws.s0"},
          {"parent_id", 6},
          {"parent", "r1.train.ws.pre"},
          {"lineage", {"r1.train.ws.pre", "r1.prep.ws.post", "ws.s1"}},
          {"step",
           {{"pipeline", "kale"},
            {"run", "r1"},
            {"step", "train"},
            {"phase", "post"},
            {"command", "python train.py"},
            {"exit_status", 0}}}};
}

TEST(CtlFormat, SnapshotShowPrintsEveryField) {
  EXPECT_EQ(format_result("snapshot.show", post_snapshot()),
            "name:           r1.train.ws.post\n"
            "state:          created\n"
            "pipeline:       kale\n"
            "run:            r1\n"
            "step:           train\n"
            "phase:          post\n"
            "command:        python train.py\n"
            "exit status:    0\n"
            "created:        2024-05-01T12:00:05.000000000Z (UTC)\n"
            "source volume:  ws (device id 2)\n"
            "cloned from:    ws.s0 (the snapshot the source volume was made from)\n"
            "thin id:        9\n"
            "size:           1.0G (1073741824 bytes)\n"
            "mapped:         3.0M (3145728 bytes)\n"
            "parent:         r1.train.ws.pre\n"
            "lineage:        r1.train.ws.pre\n"
            "                r1.prep.ws.post\n"
            "                ws.s1\n"
            "labels:         team=ml\n"
            "                zone=a\n"
            "(lineage: the earlier snapshots of the same volume, nearest first)\n");
}

TEST(CtlFormat, SnapshotShowSaysWhatIsUnknown) {
  json s = {{"id", 3},
            {"name", "ws.s3"},
            {"kind", "snapshot"},
            {"state", "created"},
            {"thin_id", 3},
            {"size_bytes", 16777216},
            {"created", "2024-05-01T12:00:00.000000000Z"},
            {"labels", json::object()},
            {"lineage", json::array()},
            {"pause_ns", 1200}};
  std::string out = format_snapshot(s);
  EXPECT_NE(out.find("step:           - (not a step snapshot: taken by snapshot.create)\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("source volume:  - (the origin was deleted)\n"), std::string::npos) << out;
  EXPECT_NE(out.find("mapped:         - (not measured)\n"), std::string::npos) << out;
  EXPECT_NE(out.find("parent:         - (no earlier snapshot of this origin)\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("lineage:        -\n"), std::string::npos) << out;
  EXPECT_NE(out.find("labels:         -\n"), std::string::npos) << out;
  // A field this version does not know is still shown.
  EXPECT_NE(out.find("pause_ns:       1200\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("(lineage:"), std::string::npos) << out;
}

TEST(CtlFormat, SnapshotShowExplainsAnExitBySignal) {
  json s = post_snapshot();
  s["step"]["exit_status"] = 137;
  EXPECT_NE(format_snapshot(s).find(
                "exit status:    137 (128+9: killed by signal 9, or exit code 137)\n"),
            std::string::npos);
  s["step"].erase("exit_status");
  s["step"]["phase"] = "pre";
  EXPECT_NE(format_snapshot(s).find("exit status:    - (taken before the step ran)\n"),
            std::string::npos);
}

TEST(CtlFormat, SnapshotShowNamesARunsInitialSnapshot) {
  json s = post_snapshot();
  s["step"] = {{"pipeline", "kale"}, {"run", "r1"}, {"step", ""}, {"phase", "initial"},
               {"command", ""}};
  std::string out = format_snapshot(s);
  EXPECT_NE(out.find("step:           - (the run's initial snapshot, before its first step)\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("phase:          initial\n"), std::string::npos) << out;
  EXPECT_NE(out.find("exit status:    -\n"), std::string::npos) << out;
}

json step_snapshot(const std::string& step, const std::string& phase, const std::string& created,
                   std::optional<int> exit_status = std::nullopt) {
  json s = {
      {"pipeline", "kale"}, {"run", "r1"}, {"step", step}, {"phase", phase}, {"command", "x"}};
  if (exit_status) s["exit_status"] = *exit_status;
  return {{"id", 10},           {"name", "r1." + step + ".ws." + phase},
          {"kind", "snapshot"}, {"state", "created"},
          {"thin_id", 10},      {"size_bytes", 1073741824},
          {"created", created}, {"labels", json::object()},
          {"origin_id", 2},     {"step", s}};
}

// What run.show answers (agent/step_policy.cpp): steps by name, a live step
// with its record, one known only from its snapshots (after a restart).
json run_answer() {
  json train = {{"pipeline", "kale"},
                {"run", "r1"},
                {"step", "train"},
                {"state", "finished"},
                {"policy", "both"},
                {"registered", "2024-05-01T12:01:00.000000000Z"},
                {"started", "2024-05-01T12:01:00.500000000Z"},
                {"finished", "2024-05-01T12:05:05.500000000Z"},
                {"held_ns", 2'500'000},
                {"exit_status", 1},
                {"pre_snapshots", {"r1.train.ws.pre"}},
                {"post_snapshots", {"r1.train.ws.post"}},
                {"snapshots",
                 {step_snapshot("train", "pre", "2024-05-01T12:01:00.400000000Z"),
                  step_snapshot("train", "post", "2024-05-01T12:05:05.600000000Z", 1)}}};
  json prep = {{"pipeline", "kale"},
               {"run", "r1"},
               {"step", "prep"},
               {"state", "unknown"},
               {"snapshots",
                {step_snapshot("prep", "pre", "2024-05-01T12:00:00.000000000Z"),
                 step_snapshot("prep", "post", "2024-05-01T12:00:30.000000000Z", 0)}}};
  return {{"pipeline", "kale"}, {"run", "r1"}, {"steps", {prep, train}}};
}

TEST(CtlFormat, RunShowListsStepsInStartOrderAndTheirSnapshots) {
  json r = run_answer();
  std::swap(r["steps"][0], r["steps"][1]);  // the agent orders by name; we by time
  EXPECT_EQ(format_result("run.show", r, {{2, "ws"}}),
            "run kale/r1: 2 steps, 4 snapshots (times in UTC)\n"
            "\n"
            "STEP   STATE     EXIT  STARTED               DURATION  HELD  PRE              "
            "POST\n"
            "prep   unknown   0     -                     -         -     r1.prep.ws.pre   "
            "r1.prep.ws.post\n"
            "train  finished  1     2024-05-01T12:01:00Z  4m05s     2ms   r1.train.ws.pre  "
            "r1.train.ws.post\n"
            "\n"
            "SNAPSHOT          STEP   PHASE  VOLUME  SIZE  EXIT  CREATED\n"
            "r1.prep.ws.pre    prep   pre    ws      1.0G  -     2024-05-01T12:00:00Z\n"
            "r1.prep.ws.post   prep   post   ws      1.0G  0     2024-05-01T12:00:30Z\n"
            "r1.train.ws.pre   train  pre    ws      1.0G  -     2024-05-01T12:01:00Z\n"
            "r1.train.ws.post  train  post   ws      1.0G  1     2024-05-01T12:05:05Z\n"
            "\n"
            "state unknown: the catalog has no record of the step itself, only its "
            "snapshots\n");
}

TEST(CtlFormat, RunShowWithoutNamesShowsOriginIdsAndStepErrors) {
  json r = run_answer();
  r["steps"][1]["state"] = "failed";
  r["steps"][1]["error"] = "pre-snapshot: no space\nleft";
  r["steps"][1].erase("finished");
  r["steps"][1]["post_snapshots"] = json::array();
  std::string out = format_run(r);
  EXPECT_NE(out.find("r1.prep.ws.pre    prep   pre    #2"), std::string::npos) << out;
  EXPECT_NE(out.find("train  failed   1     2024-05-01T12:01:00Z  -         2ms   "
                     "r1.train.ws.pre  r1.train.ws.post\n"),
            std::string::npos)
      << out;  // post names from its snapshots when the step's list is empty
  EXPECT_NE(out.find("\nerror: step train: pre-snapshot: no space\\nleft\n"), std::string::npos)
      << out;
}

TEST(CtlFormat, SnapshotListNamesOrigins) {
  json r = {{"snapshots", {step_snapshot("prep", "pre", "2024-05-01T12:00:00.000000000Z")}}};
  std::string out = format_result("snapshot.list", r, {{2, "ws"}});
  EXPECT_NE(out.find("r1.prep.ws.pre  ws      1.0G"), std::string::npos) << out;
}

TEST(CtlFormat, DeviceNamesFromAVolumeList) {
  json v = {
      {"volumes", {{{"id", 2}, {"name", "ws"}}, {{"id", 5}, {"name", "data"}}, {{"name", "x"}}}}};
  EXPECT_EQ(device_names(v), (DeviceNames{{2, "ws"}, {5, "data"}}));
  EXPECT_TRUE(device_names(json::object()).empty());
}

}  // namespace
}  // namespace stepsnap::agent
