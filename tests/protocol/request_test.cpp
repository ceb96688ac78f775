#include "protocol/request.h"

#include <gtest/gtest.h>

namespace stepsnap::protocol {
namespace {

using json = nlohmann::json;

RequestError rejected(std::string_view line) {
  auto r = parse_request(line);
  EXPECT_FALSE(r) << "accepted: " << line;
  return r ? RequestError{} : r.error();
}

Request accepted(std::string_view line) {
  auto r = parse_request(line);
  EXPECT_TRUE(r) << line << " -> " << (r ? "" : r.error().message);
  return r ? *r : Request{};
}

std::string req(const std::string& op, const json& args, const json& id = 1) {
  return json{{"v", 1}, {"id", id}, {"op", op}, {"args", args}}.dump();
}

TEST(Request, VolumeCreate) {
  auto r =
      accepted(req("volume.create",
                   {{"name", "ws"}, {"size_bytes", 1 << 30}, {"labels", {{"team", "ml"}}}}, "abc"));
  EXPECT_EQ(r.id, "abc");
  EXPECT_EQ(r.op, Op::volume_create);
  const auto& a = std::get<VolumeCreateArgs>(r.args);
  EXPECT_EQ(a.name, "ws");
  EXPECT_EQ(a.size_bytes, 1u << 30);
  EXPECT_FALSE(a.pool);
  EXPECT_EQ(a.labels.at("team"), "ml");
}

TEST(Request, ListsArePagedWithABoundedDefault) {
  auto r = accepted(req("snapshot.list", {{"run", "r1"}, {"limit", 20}, {"after", "ws-snap-7"}}));
  const auto& a = std::get<SnapshotListArgs>(r.args);
  EXPECT_EQ(a.page.limit, 20u);
  EXPECT_EQ(a.page.after, "ws-snap-7");
  EXPECT_EQ(std::get<VolumeListArgs>(accepted(req("volume.list", json::object())).args).page.limit,
            kDefaultPageSize);
  EXPECT_EQ(rejected(req("snapshot.list", {{"limit", 0}})).code, code::invalid_value);
  auto big = rejected(req("volume.list", {{"limit", kMaxPageSize + 1}}));
  EXPECT_EQ(big.code, code::invalid_value);
  EXPECT_NE(big.message.find("after"), std::string::npos) << big.message;
  EXPECT_EQ(rejected(req("snapshot.list", {{"after", "../x"}})).code, code::invalid_value);
  auto e = accepted(req("events.subscribe", {{"since", 5}, {"limit", 100}, {"follow", false}}));
  EXPECT_EQ(std::get<EventsSubscribeArgs>(e.args).limit, 100u);
  EXPECT_EQ(rejected(req("events.subscribe", {{"limit", 0}})).code, code::invalid_value);
}

TEST(Request, VolumeCreateFilesystemIsExt4OrXfs) {
  auto r =
      accepted(req("volume.create", {{"name", "ws"}, {"size_bytes", 512}, {"filesystem", "xfs"}}));
  EXPECT_EQ(std::get<VolumeCreateArgs>(r.args).filesystem, "xfs");
  auto e =
      rejected(req("volume.create", {{"name", "ws"}, {"size_bytes", 512}, {"filesystem", "fat"}}));
  EXPECT_EQ(e.code, "invalid_value");
  EXPECT_NE(e.message.find("ext4, xfs"), std::string::npos) << e.message;
}

TEST(Request, InitialSnapshotNamesBothPipelineAndRun) {
  auto r = accepted(req("snapshot.create", {{"volume", "v"}, {"pipeline", "p"}, {"run", "r"}}));
  const auto& a = std::get<SnapshotCreateArgs>(r.args);
  EXPECT_EQ(a.pipeline, "p");
  EXPECT_EQ(a.run, "r");
  auto e = rejected(req("snapshot.create", {{"volume", "v"}, {"pipeline", "p"}}));
  EXPECT_EQ(e.code, "invalid_value");
  EXPECT_NE(e.message.find("args.run"), std::string::npos) << e.message;
}

TEST(Request, RunClone) {
  auto r = accepted(req("run.clone", {{"pipeline", "p"}, {"run", "r"}, {"volume", "ws"}}));
  EXPECT_EQ(r.op, Op::run_clone);
  const auto& a = std::get<RunCloneArgs>(r.args);
  EXPECT_EQ(a.volume, "ws");
  EXPECT_FALSE(a.snapshot);
  EXPECT_EQ(rejected(req("run.clone", {{"pipeline", "p"}, {"run", "../r"}, {"volume", "ws"}})).code,
            "invalid_value");
}

TEST(Request, SnapshotLabelNeedsAtLeastOneValidLabel) {
  auto r = accepted(req("snapshot.label", {{"name", "s"}, {"labels", {{"metric.r2", "0.97"}}}}));
  EXPECT_EQ(r.op, Op::snapshot_label);
  EXPECT_EQ(std::get<SnapshotLabelArgs>(r.args).labels.at("metric.r2"), "0.97");
  auto none = rejected(req("snapshot.label", {{"name", "s"}}));
  EXPECT_EQ(none.code, "invalid_value");
  EXPECT_NE(none.message.find("args.labels"), std::string::npos) << none.message;
  EXPECT_EQ(rejected(req("snapshot.label", {{"name", "s"}, {"labels", json::object()}})).code,
            "invalid_value");
  EXPECT_EQ(rejected(req("snapshot.label", {{"name", "s"}, {"labels", {{"a/b", "v"}}}})).code,
            "invalid_value");
}

TEST(Request, RunCreate) {
  auto r = accepted(req("run.create", {{"pipeline", "p"}, {"volumes", {"ws", "data"}}}));
  EXPECT_EQ(r.op, Op::run_create);
  const auto& a = std::get<RunCreateArgs>(r.args);
  EXPECT_FALSE(a.run);
  EXPECT_EQ(a.volumes, (std::vector<std::string>{"ws", "data"}));
  EXPECT_TRUE(a.sources.empty());
  auto restored = accepted(req("run.create", {{"pipeline", "p"},
                                              {"run", "r2"},
                                              {"volumes", {"ws", "data"}},
                                              {"sources", {"r1.s.ws.pre", "r1.s.data.pre"}}}));
  EXPECT_EQ(std::get<RunCreateArgs>(restored.args).sources.size(), 2u);
  EXPECT_EQ(rejected(req("run.create", {{"pipeline", "p"}})).code, "missing_field");
  EXPECT_EQ(rejected(req("run.create",
                         {{"pipeline", "p"}, {"volumes", {"ws", "data"}}, {"sources", {"s"}}}))
                .code,
            "invalid_value");
}

TEST(Request, RunCreatePlanListsStepsInExecutionOrder) {
  json plan = {{"steps",
                {{{"step", "prepare"}},
                 {{"step", "fit"}, {"after", {"prepare"}}},
                 {{"step", "report"}, {"after", {"prepare", "fit"}}}}},
               {"restored", {"prepare"}},
               {"restored_from", "r1"}};
  auto r = accepted(req("run.create", {{"pipeline", "p"}, {"volumes", {"ws"}}, {"plan", plan}}));
  const auto& a = std::get<RunCreateArgs>(r.args);
  ASSERT_TRUE(a.plan);
  ASSERT_EQ(a.plan->steps.size(), 3u);
  EXPECT_EQ(a.plan->steps[2].step, "report");
  EXPECT_EQ(a.plan->steps[2].after, (std::vector<std::string>{"prepare", "fit"}));
  EXPECT_EQ(a.plan->restored, (std::vector<std::string>{"prepare"}));
  EXPECT_EQ(a.plan->restored_from, "r1");

  auto with_plan = [](json p) {
    return req("run.create", {{"pipeline", "p"}, {"volumes", {"ws"}}, {"plan", std::move(p)}});
  };
  // A dependency listed after its dependant: not in execution order.
  auto late = rejected(
      with_plan({{"steps", {{{"step", "fit"}, {"after", {"prepare"}}}, {{"step", "prepare"}}}}}));
  EXPECT_EQ(late.code, "invalid_value");
  EXPECT_NE(late.message.find("plan.steps[0].after"), std::string::npos) << late.message;
  EXPECT_EQ(rejected(with_plan({{"steps", {{{"step", "a"}}, {{"step", "a"}}}}})).code,
            "invalid_value");
  EXPECT_EQ(rejected(with_plan({{"steps", {{{"step", "a/b"}}}}})).code, "invalid_value");
  EXPECT_EQ(rejected(with_plan({{"steps", {{{"step", "a"}, {"colour", "red"}}}}})).code,
            "unknown_field");
  EXPECT_EQ(
      rejected(
          with_plan({{"steps", {{{"step", "a"}}}}, {"restored", {"b"}}, {"restored_from", "r1"}}))
          .code,
      "invalid_value");
  EXPECT_EQ(rejected(with_plan({{"steps", {{{"step", "a"}}}}, {"restored", {"a"}}})).code,
            "missing_field");
  EXPECT_EQ(rejected(with_plan({{"steps", json::array()}})).code, "invalid_value");
  EXPECT_EQ(rejected(with_plan("all")).code, "wrong_type");
}

TEST(Request, EveryOpParsesWithMinimalArgs) {
  std::vector<std::pair<std::string, json>> cases = {
      {"volume.create", {{"name", "v"}, {"size_bytes", 4096}}},
      {"volume.list", json::object()},
      {"volume.delete", {{"name", "v"}}},
      {"snapshot.create", {{"volume", "v"}}},
      {"snapshot.list", json::object()},
      {"snapshot.show", {{"name", "s"}}},
      {"snapshot.delete", {{"name", "s"}}},
      {"snapshot.label", {{"name", "s"}, {"labels", {{"k", "v"}}}}},
      {"clone.create", {{"snapshot", "s"}, {"name", "c"}}},
      {"restore", {{"snapshot", "s"}, {"name", "v2"}}},
      {"step.register",
       {{"pipeline", "p"},
        {"run", "r"},
        {"step", "s"},
        {"cgroup", "/sys/fs/cgroup/x"},
        {"volumes", {"ws"}}}},
      {"step.status", {{"pipeline", "p"}, {"run", "r"}, {"step", "s"}}},
      {"step.unregister", {{"pipeline", "p"}, {"run", "r"}, {"step", "s"}}},
      {"run.show", {{"pipeline", "p"}, {"run", "r"}}},
      {"events.subscribe", json::object()},
  };
  for (const auto& [op, args] : cases) {
    auto r = accepted(req(op, args));
    EXPECT_EQ(to_string(r.op), op);
  }
}

TEST(Request, ArgsMayBeOmittedWhenNoneAreRequired) {
  auto r = accepted(R"({"v":1,"id":2,"op":"volume.list"})");
  EXPECT_EQ(r.op, Op::volume_list);
  auto missing = rejected(R"({"v":1,"id":2,"op":"volume.delete"})");
  EXPECT_EQ(missing.code, code::missing_field);
  EXPECT_EQ(missing.message, "args.name: missing; it is required");
  EXPECT_EQ(missing.id, 2);
}

TEST(Request, StepRegisterFull) {
  auto r = accepted(req("step.register", {{"pipeline", "kale-demo"},
                                          {"run", "run-0042"},
                                          {"step", "train_model"},
                                          {"cgroup", "/sys/fs/cgroup/unified/stepsnap/r42/train"},
                                          {"volumes", {"ws-clone", "data-clone"}},
                                          {"policy", "pre"},
                                          {"command", "python -m train --epochs 3"},
                                          {"labels", {{"notebook", "train.ipynb"}}}}));
  const auto& a = std::get<StepRegisterArgs>(r.args);
  EXPECT_EQ(a.volumes, (std::vector<std::string>{"ws-clone", "data-clone"}));
  EXPECT_EQ(a.policy, SnapshotPolicy::pre);
  EXPECT_EQ(a.command, "python -m train --epochs 3");
}

TEST(Request, StepRegisterDefaultsToBoth) {
  auto r = accepted(
      req("step.register",
          {{"pipeline", "p"}, {"run", "r"}, {"step", "s"}, {"cgroup", "/c"}, {"volumes", {"a"}}}));
  EXPECT_EQ(std::get<StepRegisterArgs>(r.args).policy, SnapshotPolicy::both);
  EXPECT_TRUE(std::get<StepRegisterArgs>(r.args).lease_connection);
}

TEST(Request, StepRegisterLeaseIsTheConnectionUnlessTimeIsAsked) {
  json a = {{"pipeline", "p"}, {"run", "r"}, {"step", "s"}, {"cgroup", "/c"}, {"volumes", {"a"}}};
  a["lease"] = "time";
  EXPECT_FALSE(std::get<StepRegisterArgs>(accepted(req("step.register", a)).args).lease_connection);
  a["lease"] = "connection";
  EXPECT_TRUE(std::get<StepRegisterArgs>(accepted(req("step.register", a)).args).lease_connection);
  a["lease"] = "forever";
  EXPECT_EQ(rejected(req("step.register", a)).message,
            "args.lease: \"forever\" is not one of connection, time");
}

TEST(Request, StepRegisterPodSkipContainersMakesAPodStep) {
  json a = {{"pipeline", "p"}, {"run", "r"}, {"step", "s"}, {"cgroup", "/c"}, {"volumes", {"a"}}};
  EXPECT_FALSE(std::get<StepRegisterArgs>(accepted(req("step.register", a)).args)
                   .pod_skip_containers.has_value());
  a["pod_skip_containers"] = 3;
  EXPECT_EQ(std::get<StepRegisterArgs>(accepted(req("step.register", a)).args).pod_skip_containers,
            3u);
  a["pod_skip_containers"] = kMaxPodSkipContainers + 1;
  auto big = rejected(req("step.register", a));
  EXPECT_EQ(big.code, code::invalid_value);
  EXPECT_EQ(big.message,
            "args.pod_skip_containers: 65 is more than 64 containers before the step's");
  a["pod_skip_containers"] = -1;
  EXPECT_EQ(rejected(req("step.register", a)).code, code::wrong_type);
  a["pod_skip_containers"] = "2";
  EXPECT_EQ(rejected(req("step.register", a)).code, code::wrong_type);
}

TEST(Request, StepReadyNamesTheStepAndItsRegistration) {
  json a = {{"pipeline", "p"}, {"run", "r1"}, {"step", "train"}, {"registration", 7}};
  auto r = accepted(req("step.ready", a));
  ASSERT_EQ(r.op, Op::step_ready);
  const auto& args = std::get<StepReadyArgs>(r.args);
  EXPECT_EQ(args.step, "train");
  EXPECT_EQ(args.registration, 7u);
  a.erase("registration");
  EXPECT_EQ(rejected(req("step.ready", a)).code, code::missing_field);
  a["registration"] = "7";
  EXPECT_EQ(rejected(req("step.ready", a)).code, code::wrong_type);
}

TEST(Request, StepUnregisterNamesTheStepAndNothingElse) {
  auto r = accepted(req("step.unregister", {{"pipeline", "p"}, {"run", "r1"}, {"step", "train"}}));
  ASSERT_EQ(r.op, Op::step_unregister);
  const auto& a = std::get<StepUnregisterArgs>(r.args);
  EXPECT_EQ(a.pipeline, "p");
  EXPECT_EQ(a.run, "r1");
  EXPECT_EQ(a.step, "train");
  EXPECT_EQ(rejected(req("step.unregister", {{"pipeline", "p"}, {"run", "r1"}})).code,
            code::missing_field);
  auto extra = rejected(
      req("step.unregister", {{"pipeline", "p"}, {"run", "r1"}, {"step", "s"}, {"cgroup", "/c"}}));
  EXPECT_EQ(extra.code, code::unknown_field);
  EXPECT_EQ(
      rejected(req("step.unregister", {{"pipeline", "p"}, {"run", "r1"}, {"step", "a/b"}})).code,
      code::invalid_value);
}

TEST(Request, EventsSubscribe) {
  auto r = accepted(req("events.subscribe", {{"since", 41}, {"follow", false}}));
  const auto& a = std::get<EventsSubscribeArgs>(r.args);
  EXPECT_EQ(a.since, 41u);
  EXPECT_FALSE(a.follow);
  auto live = accepted(req("events.subscribe", json::object()));
  EXPECT_FALSE(std::get<EventsSubscribeArgs>(live.args).since);
  EXPECT_TRUE(std::get<EventsSubscribeArgs>(live.args).follow);
  EXPECT_EQ(rejected(req("events.subscribe", {{"since", -1}})).code, code::wrong_type);
  EXPECT_EQ(rejected(req("events.subscribe", {{"follow", "yes"}})).code, code::wrong_type);
}

TEST(Request, MalformedJson) {
  for (std::string_view bad : {"", "{", "{\"v\":1,}", "nul", "{\"v\":1}}", "\xff\xfe",
                               "{\"v\":1,\"id\":\"\xc3\x28\",\"op\":\"volume.list\"}"}) {
    auto e = rejected(bad);
    EXPECT_EQ(e.code, code::bad_json) << bad;
    EXPECT_TRUE(e.id.is_null());
  }
}

TEST(Request, NotAnObject) {
  EXPECT_EQ(rejected("[1,2]").code, code::bad_request);
  EXPECT_EQ(rejected("42").code, code::bad_request);
}

TEST(Request, TooLarge) {
  std::string big = req("volume.list", {{"pool", std::string(kMaxRequestBytes, 'a')}});
  auto e = rejected(big);
  EXPECT_EQ(e.code, code::too_large);
  EXPECT_NE(e.message.find("65536"), std::string::npos);
}

TEST(Request, TooDeep) {
  std::string deep = std::string(100000 > kMaxRequestBytes ? 5000 : 5000, '[');
  EXPECT_EQ(rejected(deep).code, code::bad_json);
  // Brackets inside strings do not count.
  auto ok =
      accepted(req("snapshot.create", {{"volume", "v"}, {"labels", {{"k", "[[[[[[[[[[[["}}}}));
  EXPECT_EQ(std::get<SnapshotCreateArgs>(ok.args).labels.at("k"), "[[[[[[[[[[[[");
}

TEST(Request, DuplicateKeysAreRefused) {
  auto e = rejected(R"({"v":1,"id":1,"op":"volume.list","op":"volume.delete"})");
  EXPECT_EQ(e.code, code::bad_request);
  EXPECT_NE(e.message.find("\"op\""), std::string::npos);
  EXPECT_EQ(rejected(R"({"v":1,"id":1,"op":"volume.delete","args":{"name":"a","name":"b"}})").code,
            code::bad_request);
}

TEST(Request, UnknownFieldsAreNamed) {
  auto top = rejected(R"({"v":1,"id":1,"op":"volume.list","extra":true})");
  EXPECT_EQ(top.code, code::unknown_field);
  EXPECT_EQ(top.message, "extra: unknown field; allowed here: args, id, op, v");
  auto arg = rejected(req("volume.delete", {{"name", "x"}, {"force", true}}));
  EXPECT_EQ(arg.code, code::unknown_field);
  EXPECT_EQ(arg.message, "args.force: unknown field; allowed here: name, pool");
  EXPECT_EQ(arg.id, 1);
}

TEST(Request, VersionAndIdAndOp) {
  EXPECT_EQ(rejected(R"({"id":1,"op":"volume.list"})").code, code::missing_field);
  auto v2 = rejected(R"({"v":2,"id":1,"op":"volume.list"})");
  EXPECT_EQ(v2.code, code::unsupported_version);
  EXPECT_EQ(v2.message, "v: 2 is not supported; this agent speaks v1");
  EXPECT_EQ(rejected(R"({"v":"1","id":1,"op":"volume.list"})").code, code::wrong_type);
  EXPECT_EQ(rejected(R"({"v":1,"op":"volume.list"})").code, code::missing_field);
  EXPECT_EQ(rejected(R"({"v":1,"id":-3,"op":"volume.list"})").code, code::wrong_type);
  EXPECT_EQ(rejected(R"({"v":1,"id":{"a":1},"op":"volume.list"})").code, code::wrong_type);
  auto op = rejected(R"({"v":1,"id":"q","op":"volume.explode"})");
  EXPECT_EQ(op.code, code::unknown_op);
  EXPECT_NE(op.message.find("known ops: volume.create"), std::string::npos);
  EXPECT_EQ(op.id, "q");
  EXPECT_EQ(rejected(R"({"v":1,"id":1,"op":7})").code, code::wrong_type);
  EXPECT_EQ(rejected(R"({"v":1,"id":1,"op":"volume.list","args":[]})").code, code::wrong_type);
}

TEST(Request, NamesOutsideTheRuleAreRefusedWithTheRule) {
  for (std::string bad :
       std::vector<std::string>{"", ".", "..", "a/b", "a b", "ä", std::string(64, 'x'), "a\nb",
                                std::string("a\0b", 3)}) {
    auto e = rejected(req("volume.delete", {{"name", bad}}));
    EXPECT_EQ(e.code, code::invalid_value) << bad;
    EXPECT_EQ(e.message.rfind("args.name: ", 0), 0u) << e.message;
    EXPECT_NE(e.message.find("1-63 characters"), std::string::npos) << e.message;
  }
  for (std::string good :
       std::vector<std::string>{"a", "...", ".hidden", "A-b_c.9", std::string(63, 'x')}) {
    accepted(req("volume.delete", {{"name", good}}));
  }
}

TEST(Request, WrongTypesSayWhatWasExpected) {
  auto e = rejected(req("volume.create", {{"name", "v"}, {"size_bytes", "10G"}}));
  EXPECT_EQ(e.code, code::wrong_type);
  EXPECT_EQ(e.message, "args.size_bytes: expected an unsigned integer, got a string");
  EXPECT_EQ(rejected(req("volume.create", {{"name", "v"}, {"size_bytes", 4096.0}})).code,
            code::wrong_type);
  EXPECT_EQ(rejected(req("volume.delete", {{"name", 5}})).code, code::wrong_type);
}

TEST(Request, SizeMustBeSectorsAndSane) {
  EXPECT_EQ(rejected(req("volume.create", {{"name", "v"}, {"size_bytes", 0}})).code,
            code::invalid_value);
  EXPECT_EQ(rejected(req("volume.create", {{"name", "v"}, {"size_bytes", 1000}})).code,
            code::invalid_value);
  EXPECT_EQ(rejected(req("volume.create", {{"name", "v"}, {"size_bytes", 1ull << 60}})).code,
            code::invalid_value);
}

TEST(Request, Labels) {
  EXPECT_EQ(rejected(req("snapshot.create", {{"volume", "v"}, {"labels", {{"k", 1}}}})).code,
            code::wrong_type);
  EXPECT_EQ(
      rejected(req("snapshot.create", {{"volume", "v"}, {"labels", {{"bad key", "x"}}}})).code,
      code::invalid_value);
  EXPECT_EQ(rejected(req("snapshot.create", {{"volume", "v"}, {"labels", {"k"}}})).code,
            code::wrong_type);
  json many = json::object();
  for (int i = 0; i <= static_cast<int>(kMaxLabels); ++i) many["k" + std::to_string(i)] = "v";
  EXPECT_EQ(rejected(req("snapshot.create", {{"volume", "v"}, {"labels", many}})).code,
            code::invalid_value);
  EXPECT_EQ(rejected(req("snapshot.create",
                         {{"volume", "v"}, {"labels", {{"k", std::string(2000, 'v')}}}}))
                .code,
            code::invalid_value);
}

TEST(Request, StepRegisterValidation) {
  json base = {
      {"pipeline", "p"}, {"run", "r"}, {"step", "s"}, {"cgroup", "/c"}, {"volumes", {"a"}}};
  auto with = [&](const std::string& k, const json& v) {
    json a = base;
    a[k] = v;
    return req("step.register", a);
  };
  EXPECT_EQ(rejected(with("cgroup", "relative/path")).code, code::invalid_value);
  EXPECT_EQ(rejected(with("cgroup", "/sys/fs/cgroup/../../etc")).code, code::invalid_value);
  EXPECT_EQ(rejected(with("cgroup", "/sys/fs/cgroup/./x")).code, code::invalid_value);
  EXPECT_EQ(rejected(with("volumes", json::array())).code, code::invalid_value);
  EXPECT_EQ(rejected(with("volumes", {"a", "a"})).code, code::invalid_value);
  EXPECT_EQ(rejected(with("volumes", {"a", 3})).message,
            "args.volumes[1]: expected a string, got an unsigned integer");
  EXPECT_EQ(rejected(with("volumes", "a")).code, code::wrong_type);
  auto policy = rejected(with("policy", "sometimes"));
  EXPECT_EQ(policy.message, "args.policy: \"sometimes\" is not one of pre, post, both, none");
  EXPECT_EQ(rejected(with("command", std::string(kMaxCommandLength + 1, 'x'))).code,
            code::invalid_value);
}

TEST(Request, LongValuesAreCutInMessages) {
  auto e = rejected(req("volume.delete", {{"name", std::string(5000, 'x')}}));
  EXPECT_LT(e.message.size(), 300u);
}

TEST(Response, Shapes) {
  auto ok = json::parse(ok_response(7, {{"name", "ws"}}));
  EXPECT_EQ(ok, (json{{"v", 1}, {"id", 7}, {"ok", true}, {"result", {{"name", "ws"}}}}));
  auto err = json::parse(error_response("x", "not_found", "volume ws: not found"));
  EXPECT_EQ(err["ok"], false);
  EXPECT_EQ(err["error"]["code"], "not_found");
  EXPECT_FALSE(err["error"].contains("details"));
  auto trunc = json::parse(error_response(nullptr, "events.truncated", "m", {{"oldest_seq", 9}}));
  EXPECT_EQ(trunc["error"]["details"]["oldest_seq"], 9);
  EXPECT_TRUE(trunc["id"].is_null());
  auto ev = json::parse(event_response(3, {{"seq", 1}}));
  EXPECT_EQ(ev["event"]["seq"], 1);
  // Never throws on bytes that are not UTF-8.
  EXPECT_NO_THROW(error_response(1, "bad", std::string("\xff\xfe")));
}

// The spliced responses (a result or an event given as its text) are the
// bytes of the ones built from values, for ids of both kinds.
TEST(Response, SplicedTextIsTheSameLine) {
  const json result = {{"snapshots", {{{"name", "ws-\"pre\""}, {"id", 1}}}}, {"next_after", "é"}};
  const json event = {{"data", {{"a", "\n\u0001"}}}, {"seq", 4}, {"type", "error"}, {"version", 1}};
  for (const json& id : {json(7), json("req-\"1\""), json(nullptr)}) {
    EXPECT_EQ(ok_text_response(id, result.dump()), ok_response(id, result));
    EXPECT_EQ(event_line_response(id, event.dump()), event_response(id, event));
  }
}

TEST(Request, RetentionOpsAreChecked) {
  auto set = accepted(req("retention.set", {{"pipeline", "nightly"},
                                            {"keep_runs", 3},
                                            {"keep_failed_runs", 1},
                                            {"max_age_seconds", 86400},
                                            {"keep", {"pin"}}}));
  EXPECT_EQ(set.op, Op::retention_set);
  const auto& a = std::get<RetentionSetArgs>(set.args);
  EXPECT_EQ(a.pipeline, "nightly");
  EXPECT_EQ(a.keep_runs, 3u);
  EXPECT_EQ(a.keep_failed_runs, 1u);
  EXPECT_EQ(a.max_age_seconds, 86400u);
  EXPECT_EQ(a.keep, (std::vector<std::string>{"pin"}));
  EXPECT_FALSE(a.clear);
  // No pipeline: the default rule.
  EXPECT_FALSE(
      std::get<RetentionSetArgs>(accepted(req("retention.set", {{"keep_runs", 1}})).args).pipeline);
  EXPECT_EQ(rejected(req("retention.set", {{"keep_runs", 0}})).code, "invalid_value");
  EXPECT_EQ(rejected(req("retention.set", {{"max_age_seconds", 0}})).code, "invalid_value");
  EXPECT_EQ(rejected(req("retention.set", {{"keep_runs", -1}})).code, "wrong_type");
  EXPECT_EQ(rejected(req("retention.set", {{"max_age", "7d"}})).code, "unknown_field");
  EXPECT_EQ(rejected(req("retention.set", {{"keep", {"bad/label"}}})).code, "invalid_value");
  auto both =
      rejected(req("retention.set", {{"pipeline", "p"}, {"clear", true}, {"keep_runs", 1}}));
  EXPECT_EQ(both.code, "invalid_value");
  EXPECT_EQ(both.message.rfind("args.clear: ", 0), 0u) << both.message;
  EXPECT_TRUE(std::get<RetentionSetArgs>(
                  accepted(req("retention.set", {{"pipeline", "p"}, {"clear", true}})).args)
                  .clear);

  EXPECT_EQ(accepted(req("retention.show", json::object())).op, Op::retention_show);
  auto gc = accepted(req("gc", {{"dry_run", true}, {"pipeline", "p"}}));
  EXPECT_EQ(gc.op, Op::gc);
  EXPECT_TRUE(std::get<GcArgs>(gc.args).dry_run);
  EXPECT_EQ(std::get<GcArgs>(gc.args).pipeline, "p");
  EXPECT_FALSE(std::get<GcArgs>(accepted(req("gc", json::object())).args).dry_run);
  EXPECT_EQ(rejected(req("gc", {{"dry_run", "yes"}})).code, "wrong_type");
}

TEST(Response, ErrorOfARejectedRequestCarriesItsId) {
  auto e = rejected(R"({"v":1,"id":"abc","op":"nope"})");
  auto line = json::parse(error_response(e));
  EXPECT_EQ(line["id"], "abc");
  EXPECT_EQ(line["error"]["code"], "unknown_op");
}

}  // namespace
}  // namespace stepsnap::protocol
