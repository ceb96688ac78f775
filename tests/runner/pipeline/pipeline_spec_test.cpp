// Pipeline files are plain data: parsed, checked and ordered without a kernel
// (label unit).
#include "runner/pipeline/pipeline_spec.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

namespace stepsnap::runner {
namespace {

using nlohmann::ordered_json;

ordered_json minimal() {
  return ordered_json::parse(R"({
    "pipeline": "house-prices",
    "volumes": [{"name": "ws", "mount": "/workspace"}],
    "steps": [{"name": "only", "command": ["true"]}]
  })");
}

// Three steps in a chain plus one independent step, in file order.
ordered_json chain() {
  return ordered_json::parse(R"({
    "pipeline": "p",
    "volumes": [{"name": "ws", "mount": "/workspace"}],
    "steps": [
      {"name": "a", "command": ["true"]},
      {"name": "b", "command": ["true"], "after": ["a"]},
      {"name": "c", "command": ["true"], "after": ["b"]},
      {"name": "d", "command": ["true"]}
    ]
  })");
}

Result<PipelineSpec> parse(const ordered_json& j) { return parse_pipeline(j.dump(), "p.json"); }

// The error message of parsing j, or "" when it parsed.
std::string error_of(const ordered_json& j) {
  auto r = parse(j);
  return r ? std::string() : r.error().message();
}

std::string error_of_text(const std::string& text) {
  auto r = parse_pipeline(text, "p.json");
  return r ? std::string() : r.error().message();
}

std::vector<std::string> names(const PipelineSpec& spec, const std::vector<std::size_t>& idx) {
  std::vector<std::string> out;
  for (auto i : idx) out.push_back(spec.steps[i].name);
  return out;
}

#define EXPECT_ERROR(json_value, needle)                           \
  do {                                                             \
    std::string message = error_of(json_value);                    \
    EXPECT_NE(message.find(needle), std::string::npos) << message; \
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;   \
  } while (0)

TEST(PipelineSpec, FullExampleLandsInItsFields) {
  auto spec = parse_pipeline(R"({
    "pipeline": "house-prices",
    "volumes": [{"name": "ws", "mount": "/workspace"},
                {"name": "data", "mount": "/data/", "read_only": true}],
    "workdir": "/workspace", "env": {"Z": "1", "A": "2"}, "marshal": "out/.marshal",
    "steps": [{"name": "read_data", "command": ["python3", "steps/read_data.py"], "after": [],
               "env": {"A": "3", "B": ""}, "workdir": "/tmp", "timeout_seconds": 300,
               "snapshots": "pre"},
              {"name": "train", "command": ["python3", "steps/train.py", ""],
               "after": ["read_data"]}]})",
                             "p.json");
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->pipeline, "house-prices");
  ASSERT_EQ(spec->volumes.size(), 2u);
  EXPECT_EQ(spec->volumes[0].name, "ws");
  EXPECT_EQ(spec->volumes[0].mount, "/workspace");
  EXPECT_FALSE(spec->volumes[0].read_only);
  EXPECT_EQ(spec->volumes[1].mount, "/data");  // normalized
  EXPECT_TRUE(spec->volumes[1].read_only);
  EXPECT_EQ(spec->workdir, "/workspace");
  using Env = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(spec->env, (Env{{"Z", "1"}, {"A", "2"}}));  // file order
  EXPECT_EQ(spec->marshal, "out/.marshal");
  ASSERT_EQ(spec->steps.size(), 2u);
  const auto& s = spec->steps[0];
  EXPECT_EQ(s.name, "read_data");
  EXPECT_EQ(s.command, (std::vector<std::string>{"python3", "steps/read_data.py"}));
  EXPECT_TRUE(s.after.empty());
  EXPECT_EQ(s.env, (Env{{"A", "3"}, {"B", ""}}));
  EXPECT_EQ(s.workdir, "/tmp");
  EXPECT_EQ(s.timeout_seconds, 300.0);
  EXPECT_TRUE(s.snapshots.pre);
  EXPECT_FALSE(s.snapshots.post);
  const auto& t = spec->steps[1];
  EXPECT_EQ(t.after, (std::vector<std::string>{"read_data"}));
  EXPECT_FALSE(t.workdir);
  EXPECT_FALSE(t.timeout_seconds);
  EXPECT_TRUE(t.snapshots.pre && t.snapshots.post);  // default pre,post
  EXPECT_EQ(t.command.back(), "");                   // empty arguments are arguments

  EXPECT_EQ(step_env(*spec, 0), (Env{{"Z", "1"}, {"A", "3"}, {"B", ""}}));
  EXPECT_EQ(step_env(*spec, 1), (Env{{"Z", "1"}, {"A", "2"}}));
  EXPECT_EQ(step_workdir(*spec, 0), "/tmp");
  EXPECT_EQ(step_workdir(*spec, 1), "/workspace");
  EXPECT_EQ(find_step(*spec, "train"), 1u);
  EXPECT_FALSE(find_step(*spec, "nope"));
}

TEST(PipelineSpec, DefaultsOfAMinimalFile) {
  auto spec = parse(minimal());
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->marshal, ".marshal");
  EXPECT_FALSE(spec->workdir);
  EXPECT_TRUE(spec->env.empty());
  EXPECT_FALSE(step_workdir(*spec, 0));
}

TEST(PipelineSpec, SnapshotChoices) {
  for (auto [text, pre, post] :
       {std::tuple{"pre,post", true, true}, std::tuple{"post,pre", true, true},
        std::tuple{"pre", true, false}, std::tuple{"post", false, true},
        std::tuple{"none", false, false}}) {
    auto j = minimal();
    j["steps"][0]["snapshots"] = text;
    auto spec = parse(j);
    ASSERT_TRUE(spec) << text;
    EXPECT_EQ(spec->steps[0].snapshots.pre, pre) << text;
    EXPECT_EQ(spec->steps[0].snapshots.post, post) << text;
  }
  auto j = minimal();
  j["steps"][0]["snapshots"] = "both";
  EXPECT_ERROR(j, "p.json: steps[0].snapshots: \"both\" is not a snapshot choice; use pre,post");
  j["steps"][0]["snapshots"] = true;
  EXPECT_ERROR(j, "steps[0].snapshots: expected a string, got boolean");
}

TEST(PipelineSpec, BadJsonGivesLineAndColumn) {
  std::string message = error_of_text("{\n  \"pipeline\": \"p\",\n  \"volumes\": [}\n");
  EXPECT_NE(message.find("p.json: not valid JSON: "), std::string::npos) << message;
  EXPECT_NE(message.find("line 3, column"), std::string::npos) << message;
  EXPECT_EQ(message.find("[json.exception"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_NE(error_of_text("").find("not valid JSON"), std::string::npos);
}

TEST(PipelineSpec, BadBytesAndHugeNumbersAreJsonErrors) {
  std::string message = error_of_text("{\"pipeline\": \"p\xff\"}");
  EXPECT_NE(message.find("not valid JSON: parse error at line 1"), std::string::npos) << message;
  EXPECT_NE(message.find("\\xff"), std::string::npos) << message;
  EXPECT_EQ(message.find('\xff'), std::string::npos) << message;
  message = error_of_text(R"({"pipeline": "p", "volumes": [{"name": "ws", "mount": "/w"}],
      "steps": [{"name": "a", "command": ["x"], "timeout_seconds": 1e400}]})");
  EXPECT_NE(message.find("not valid JSON: number overflow parsing '1e400'"), std::string::npos)
      << message;
}

TEST(PipelineSpec, TopLevelMustBeAnObject) {
  EXPECT_NE(error_of_text("[1]").find("top level: expected a JSON object"), std::string::npos);
}

TEST(PipelineSpec, UnknownKeysAreRefusedWhereTheyAre) {
  auto j = minimal();
  j["stpes"] = ordered_json::array();
  EXPECT_ERROR(j, "p.json: stpes: unknown key; the keys here are pipeline, volumes");
  j = minimal();
  j["volumes"][0]["readonly"] = true;
  EXPECT_ERROR(j, "volumes[0].readonly: unknown key; the keys here are name, mount, read_only");
  j = minimal();
  j["steps"][0]["timeout"] = 3;
  EXPECT_ERROR(j, "steps[0].timeout: unknown key");
}

TEST(PipelineSpec, DuplicateKeysAreRefusedWithTheirPath) {
  EXPECT_NE(error_of_text(R"({"pipeline": "a", "pipeline": "b"})")
                .find("p.json: pipeline: key given twice in one object; give it once"),
            std::string::npos);
  std::string message = error_of_text(
      R"({"pipeline": "p", "volumes": [{"name": "ws", "mount": "/w"}],
          "steps": [{"name": "a", "command": ["x"]},
                    {"name": "b", "command": ["x"], "after": [], "after": ["a"]}]})");
  EXPECT_NE(message.find("steps[1].after: key given twice"), std::string::npos) << message;
}

TEST(PipelineSpec, NamesFollowTheNameRule) {
  auto j = minimal();
  j["pipeline"] = "house prices";
  EXPECT_ERROR(j, "pipeline: pipeline name \"house prices\" contains ' '; use 1-63 characters");
  j = minimal();
  j["volumes"][0]["name"] = "..";
  EXPECT_ERROR(j, "volumes[0].name: volume name \"..\" is \"..\"");
  j = minimal();
  j["steps"][0]["name"] = "";
  EXPECT_ERROR(j, "steps[0].name: step name \"\" is empty");
  j = minimal();
  j["steps"][0]["name"] = std::string(64, 'x');
  EXPECT_ERROR(j, "is 64 characters long");
  j = minimal();
  j["pipeline"] = 3;
  EXPECT_ERROR(j, "pipeline: expected a string, got number");
  j = minimal();
  j.erase("pipeline");
  EXPECT_ERROR(j, "p.json: pipeline: missing; name the pipeline");
}

TEST(PipelineSpec, DuplicateNamesAreRefused) {
  auto j = minimal();
  j["volumes"].push_back({{"name", "ws"}, {"mount", "/data"}});
  EXPECT_ERROR(j, "volumes[1].name: volume \"ws\" is already volumes[0]");
  j = minimal();
  j["steps"].push_back({{"name", "only"}, {"command", {"true"}}});
  EXPECT_ERROR(j, "steps[1].name: step \"only\" is already steps[0]");
}

TEST(PipelineSpec, MountsAreAbsoluteDistinctAndUsable) {
  auto with_mount = [](const std::string& mount) {
    auto j = minimal();
    j["volumes"][0]["mount"] = mount;
    return j;
  };
  EXPECT_ERROR(with_mount("workspace"), "volumes[0].mount: \"workspace\" is not absolute");
  EXPECT_ERROR(with_mount(""), "is not absolute");
  EXPECT_ERROR(with_mount("/"), "volumes[0].mount: cannot be /");
  EXPECT_ERROR(with_mount("//"), "cannot be /");
  EXPECT_ERROR(with_mount("/proc"), "hidden by the step's own /proc");
  EXPECT_ERROR(with_mount("/proc/"), "hidden by the step's own /proc");
  EXPECT_ERROR(with_mount("/proc/sys"), "hidden by the step's own /proc");
  EXPECT_ERROR(with_mount("/a/../b"), "contains \"..\"");
  EXPECT_TRUE(parse(with_mount("/process")));
  EXPECT_EQ(parse(with_mount("//w//x/"))->volumes[0].mount, "/w/x");

  auto j = minimal();
  j["volumes"].push_back({{"name", "data"}, {"mount", "/workspace/"}});
  EXPECT_ERROR(j, "volumes[1].mount: \"/workspace\" is already the mount of volumes[0] (ws)");
  j = minimal();
  j["volumes"][0].erase("mount");
  EXPECT_ERROR(j, "volumes[0].mount: missing");
  j = minimal();
  j["volumes"][0]["read_only"] = "yes";
  EXPECT_ERROR(j, "volumes[0].read_only: expected true or false, got string");
}

TEST(PipelineSpec, TheWorkspaceIsWritable) {
  auto j = minimal();
  j["volumes"][0]["read_only"] = true;
  EXPECT_ERROR(j, "volumes[0].read_only: the first volume is the workspace");
  j = minimal();
  j["volumes"].push_back({{"name", "data"}, {"mount", "/data"}, {"read_only", true}});
  EXPECT_TRUE(parse(j));
}

TEST(PipelineSpec, AtLeastOneVolumeAndOneStep) {
  auto j = minimal();
  j["volumes"] = ordered_json::array();
  EXPECT_ERROR(j, "volumes: is empty");
  j = minimal();
  j.erase("volumes");
  EXPECT_ERROR(j, "volumes: missing");
  j = minimal();
  j["volumes"] = ordered_json::object();
  EXPECT_ERROR(j, "volumes: expected an array of volumes, got object");
  j = minimal();
  j["steps"] = ordered_json::array();
  EXPECT_ERROR(j, "steps: is empty; give at least one step");
  j = minimal();
  j.erase("steps");
  EXPECT_ERROR(j, "steps: missing");
}

TEST(PipelineSpec, CommandIsANonEmptyArrayOfStrings) {
  auto with_command = [](ordered_json command) {
    auto j = minimal();
    j["steps"][0]["command"] = std::move(command);
    return j;
  };
  EXPECT_ERROR(with_command("python3 x.py"), "steps[0].command: expected an array of strings");
  EXPECT_ERROR(with_command(ordered_json::array()), "steps[0].command: is empty");
  EXPECT_ERROR(with_command({"python3", 3}), "steps[0].command[1]: expected a string, got number");
  EXPECT_ERROR(with_command({""}), "steps[0].command[0]: the program is an empty string");
  auto j = minimal();
  j["steps"][0].erase("command");
  EXPECT_ERROR(j, "steps[0].command: missing");
}

TEST(PipelineSpec, EnvIsAnObjectOfStrings) {
  auto j = minimal();
  j["env"] = {{"N", 1}};
  EXPECT_ERROR(j, "env.N: expected a string, got number; quote the value");
  j = minimal();
  j["steps"][0]["env"] = {{"A=B", "x"}};
  EXPECT_ERROR(j, "steps[0].env.A=B: a variable name cannot contain '='");
  j = minimal();
  j["env"] = {{"", "x"}};
  EXPECT_ERROR(j, "env: a variable name is empty");
  j = minimal();
  j["env"] = ordered_json::array({"A=1"});
  EXPECT_ERROR(j, "env: expected an object");
}

TEST(PipelineSpec, WorkdirsAreAbsolute) {
  auto j = minimal();
  j["workdir"] = "workspace";
  EXPECT_ERROR(j, "p.json: workdir: \"workspace\" is not absolute");
  j = minimal();
  j["steps"][0]["workdir"] = "./x";
  EXPECT_ERROR(j, "steps[0].workdir: \"./x\" is not absolute");
}

TEST(PipelineSpec, TimeoutIsPositive) {
  auto with_timeout = [](ordered_json t) {
    auto j = minimal();
    j["steps"][0]["timeout_seconds"] = std::move(t);
    return j;
  };
  EXPECT_ERROR(with_timeout(0), "steps[0].timeout_seconds: must be a positive number");
  EXPECT_ERROR(with_timeout(-5), "must be a positive number");
  EXPECT_ERROR(with_timeout("300"), "expected a number of seconds, got string");
  auto spec = parse(with_timeout(0.5));
  ASSERT_TRUE(spec);
  EXPECT_EQ(spec->steps[0].timeout_seconds, 0.5);
}

TEST(PipelineSpec, MarshalStaysInsideTheWorkspace) {
  auto with_marshal = [](const std::string& m) {
    auto j = minimal();
    j["marshal"] = m;
    return j;
  };
  EXPECT_ERROR(with_marshal("/tmp/m"), "marshal: \"/tmp/m\" is absolute");
  EXPECT_ERROR(with_marshal("../m"), "marshal: \"../m\" leaves the workspace");
  EXPECT_ERROR(with_marshal("a/../../m"), "leaves the workspace");
  EXPECT_ERROR(with_marshal("a/.."), "leaves the workspace");
  EXPECT_ERROR(with_marshal(""), "marshal: is empty");
  EXPECT_ERROR(with_marshal("."), "is the workspace itself");
  EXPECT_ERROR(with_marshal("./"), "is the workspace itself");
  EXPECT_TRUE(parse(with_marshal("a/.m")));
  EXPECT_TRUE(parse(with_marshal("..m")));
}

TEST(PipelineSpec, AfterNamesExistingStepsOnce) {
  auto j = chain();
  j["steps"][1]["after"] = {"trian"};
  EXPECT_ERROR(j, "steps[1].after[0]: no step named \"trian\"");
  j = chain();
  j["steps"][1]["after"] = {"b"};
  EXPECT_ERROR(j, "steps[1].after[0]: step \"b\" cannot run after itself");
  j = chain();
  j["steps"][2]["after"] = {"b", "a", "b"};
  EXPECT_ERROR(j, "steps[2].after[2]: \"b\" is listed twice");
  j = chain();
  j["steps"][1]["after"] = "a";
  EXPECT_ERROR(j, "steps[1].after: expected an array of strings, got string");
}

TEST(PipelineSpec, CyclesAreNamed) {
  auto j = chain();
  j["steps"][0]["after"] = {"c"};  // a after c, c after b, b after a
  EXPECT_ERROR(j, "p.json: steps: the steps' \"after\" lists form a cycle: a -> b -> c -> a");
  // A cycle behind an innocent step is still found, and only the cycle is named.
  j = chain();
  j["steps"][3]["after"] = {"c"};
  j["steps"][1]["after"] = {"a", "d"};
  EXPECT_ERROR(j, "form a cycle: b -> c -> d -> b");
}

TEST(PipelineSpec, ExecutionOrderIsStableDependencyOrder) {
  auto spec = parse(chain());
  ASSERT_TRUE(spec);
  auto order = execution_order(*spec);
  ASSERT_TRUE(order);
  // d is ready from the start but comes later in the file than a, and b is
  // ready after a and earlier in the file than d.
  EXPECT_EQ(names(*spec, *order), (std::vector<std::string>{"a", "b", "c", "d"}));

  // A step may name a later step; it then waits for it.
  auto j = ordered_json::parse(R"({
    "pipeline": "p", "volumes": [{"name": "ws", "mount": "/w"}],
    "steps": [{"name": "evaluate", "command": ["x"], "after": ["train", "prep"]},
              {"name": "train", "command": ["x"], "after": ["prep"]},
              {"name": "side", "command": ["x"]},
              {"name": "prep", "command": ["x"]}]})");
  spec = parse(j);
  ASSERT_TRUE(spec) << spec.error().message();
  order = execution_order(*spec);
  ASSERT_TRUE(order);
  EXPECT_EQ(names(*spec, *order), (std::vector<std::string>{"side", "prep", "train", "evaluate"}));
}

TEST(PipelineSpec, ExecutionOrderOfAHandMadeSpecReportsCycles) {
  PipelineSpec spec;
  spec.pipeline = "p";
  spec.steps = {{"x", {"true"}, {"y"}, {}, {}, {}, {}}, {"y", {"true"}, {"x"}, {}, {}, {}, {}}};
  auto order = execution_order(spec);
  ASSERT_FALSE(order);
  EXPECT_NE(order.error().message().find("x -> y -> x"), std::string::npos)
      << order.error().message();
}

TEST(PipelineSpec, DependentsAreTransitiveInExecutionOrder) {
  auto j = ordered_json::parse(R"({
    "pipeline": "p", "volumes": [{"name": "ws", "mount": "/w"}],
    "steps": [{"name": "report", "command": ["x"], "after": ["evaluate", "side"]},
              {"name": "read", "command": ["x"]},
              {"name": "prep", "command": ["x"], "after": ["read"]},
              {"name": "side", "command": ["x"], "after": ["read"]},
              {"name": "train", "command": ["x"], "after": ["prep"]},
              {"name": "evaluate", "command": ["x"], "after": ["train", "prep"]}]})");
  auto spec = parse(j);
  ASSERT_TRUE(spec) << spec.error().message();
  auto of = [&](const std::string& name) {
    return names(*spec, dependents_of(*spec, *find_step(*spec, name)));
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(of("read"), (V{"prep", "side", "train", "evaluate", "report"}));
  EXPECT_EQ(of("prep"), (V{"train", "evaluate", "report"}));
  EXPECT_EQ(of("side"), (V{"report"}));
  EXPECT_EQ(of("report"), V{});
  EXPECT_TRUE(dependents_of(*spec, 99).empty());
}

TEST(PipelineSpec, StepExecOptionsCarryTheStep) {
  auto spec = parse_pipeline(R"({
    "pipeline": "house-prices",
    "volumes": [{"name": "ws", "mount": "/workspace"},
                {"name": "data", "mount": "/data", "read_only": true}],
    "workdir": "/workspace", "env": {"A": "1"}, "marshal": ".m",
    "steps": [{"name": "train", "command": ["python3", "steps/train.py"], "env": {"B": "2"},
               "timeout_seconds": 60, "snapshots": "post"}]})",
                             "p.json");
  ASSERT_TRUE(spec) << spec.error().message();
  auto o = step_exec_options(*spec, 0, "run-7");
  EXPECT_EQ(o.pipeline, "house-prices");
  EXPECT_EQ(o.run, "run-7");
  EXPECT_EQ(o.step, "train");
  EXPECT_EQ(o.hostname, "train");
  ASSERT_EQ(o.volumes.size(), 2u);
  EXPECT_EQ(o.volumes[0].name, "ws");
  EXPECT_EQ(o.volumes[0].target, "/workspace");
  EXPECT_FALSE(o.volumes[0].read_only);
  EXPECT_EQ(o.volumes[1].name, "data");
  EXPECT_TRUE(o.volumes[1].read_only);
  EXPECT_EQ(o.workdir, "/workspace");
  EXPECT_EQ(o.env, (std::vector<std::pair<std::string, std::string>>{{"A", "1"}, {"B", "2"}}));
  EXPECT_EQ(o.timeout_seconds, 60.0);
  EXPECT_FALSE(o.snapshots.pre);
  EXPECT_TRUE(o.snapshots.post);
  EXPECT_EQ(o.marshal, ".m");
  EXPECT_EQ(o.command, (std::vector<std::string>{"python3", "steps/train.py"}));
  EXPECT_FALSE(o.no_agent);
}

TEST(PipelineSpec, LoadReadsTheFileAndNamesItInErrors) {
  std::string path = ::testing::TempDir() + "pipeline_spec_test.json";
  {
    std::ofstream out(path);
    out << minimal().dump(2);
  }
  auto spec = load_pipeline(path);
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->pipeline, "house-prices");
  {
    std::ofstream out(path);
    out << R"({"pipeline": "x y"})";
  }
  spec = load_pipeline(path);
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().message().rfind(path + ": pipeline: ", 0), 0u) << spec.error().message();
  std::remove(path.c_str());
  spec = load_pipeline(path);
  ASSERT_FALSE(spec);
  EXPECT_NE(spec.error().message().find("No such file or directory"), std::string::npos)
      << spec.error().message();
}

#ifdef STEPSNAP_EXAMPLES_DIR
TEST(PipelineSpec, TheHousePricesExampleParses) {
  auto spec = load_pipeline(std::string(STEPSNAP_EXAMPLES_DIR) + "/house-prices/pipeline.json");
  ASSERT_TRUE(spec) << spec.error().message();
  auto order = execution_order(*spec);
  ASSERT_TRUE(order);
  EXPECT_EQ(names(*spec, *order),
            (std::vector<std::string>{"read_data", "preprocess", "train", "evaluate"}));
  EXPECT_EQ(spec->volumes[0].mount, "/workspace");
  EXPECT_EQ(spec->volumes[1].mount, "/data");
}
#endif

}  // namespace
}  // namespace stepsnap::runner

namespace stepsnap::runner {
namespace {

TEST(PipelineSpec, MemoryIsBytesOrASizeAndReachesExec) {
  auto j = minimal();
  j["steps"][0]["memory"] = "512M";
  auto spec = parse(j);
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->steps[0].memory_bytes, 512ull << 20);
  EXPECT_EQ(step_exec_options(*spec, 0, "r").memory_bytes, 512ull << 20);
  j["steps"][0]["memory"] = 1048576;
  EXPECT_EQ(parse(j)->steps[0].memory_bytes, 1048576u);
  for (auto bad : {ordered_json("lots"), ordered_json(0), ordered_json(-5), ordered_json(true)}) {
    j["steps"][0]["memory"] = bad;
    auto r = parse(j);
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_NE(r.error().message().find("steps[0].memory: expected a positive number of bytes"),
              std::string::npos)
        << r.error().message();
  }
}

TEST(PipelineSpec, SandboxKeysReachExec) {
  auto j = minimal();
  j["steps"][0]["user"] = "1000:100";
  j["steps"][0]["cap_add"] = {"SYS_ADMIN"};
  j["steps"][0]["cap_drop"] = {"NET_RAW"};
  j["steps"][0]["dev"] = "host";
  auto spec = parse(j);
  ASSERT_TRUE(spec) << spec.error().message();
  auto o = step_exec_options(*spec, 0, "r");
  EXPECT_EQ(o.sandbox.uid, 1000u);
  EXPECT_EQ(o.sandbox.gid, 100u);
  EXPECT_EQ(o.sandbox.cap_add, std::vector<std::string>{"SYS_ADMIN"});
  EXPECT_EQ(o.sandbox.cap_drop, std::vector<std::string>{"NET_RAW"});
  EXPECT_TRUE(o.sandbox.host_dev);
  // The defaults: root, containerd's capabilities, a minimal /dev.
  auto d = step_exec_options(*parse(minimal()), 0, "r");
  EXPECT_EQ(d.sandbox.uid, 0u);
  EXPECT_TRUE(d.sandbox.cap_add.empty());
  EXPECT_FALSE(d.sandbox.host_dev);

  j = minimal();
  j["steps"][0]["user"] = "nobody";
  EXPECT_ERROR(j, "steps[0].user: expected numeric");
  j = minimal();
  j["steps"][0]["cap_add"] = {"SUPERPOWER"};
  EXPECT_ERROR(j, "SUPERPOWER");
  j = minimal();
  j["steps"][0]["dev"] = "all";
  EXPECT_ERROR(j, "steps[0].dev: expected");
}

TEST(PipelineSpec, ToJsonReadsBackAsTheSameSpec) {
  auto original = load_pipeline(std::string(STEPSNAP_EXAMPLES_DIR) + "/house-prices/pipeline.json");
  ASSERT_TRUE(original) << original.error().message();
  original->steps[1].memory_bytes = 1u << 30;
  original->steps[2].snapshots = {.pre = false, .post = true};
  original->steps[2].sandbox.uid = 1000;
  original->steps[2].sandbox.gid = 1000;
  original->steps[2].sandbox.cap_add = {"NET_ADMIN"};
  original->steps[2].sandbox.host_dev = true;
  std::string text = pipeline_to_json(*original);
  auto again = parse_pipeline(text, "again.json");
  ASSERT_TRUE(again) << again.error().message() << "\n" << text;
  EXPECT_EQ(pipeline_to_json(*again), text);
  EXPECT_EQ(again->steps[1].memory_bytes, 1u << 30);
  EXPECT_FALSE(again->steps[2].snapshots.pre);
  EXPECT_EQ(again->steps[2].sandbox.uid, 1000u);
  EXPECT_EQ(again->steps[2].sandbox.cap_add, std::vector<std::string>{"NET_ADMIN"});
  EXPECT_TRUE(again->steps[2].sandbox.host_dev);
  EXPECT_EQ(again->marshal, original->marshal);
  EXPECT_EQ(again->env, original->env);
}

}  // namespace
}  // namespace stepsnap::runner
