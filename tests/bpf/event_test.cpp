// Pure logic of the step tracer's user side: kernel record -> Event -> JSON.
#include "bpf/event.h"

#include <gtest/gtest.h>
#include <linux/types.h>

#include <cstring>

#include "bpf/step_tracer.h"

namespace stepsnap::bpf {
namespace {

step_record exec_record() {
  step_record r{};
  r.type = STEP_REC_EXEC;
  r.flags = STEP_F_HELD | STEP_F_MAIN;
  r.pid = r.tgid = 100;
  r.ppid = 1;
  r.cgroup_id = 7;
  r.task_cgroup_id = 8;
  r.mono_ns = 1000;
  std::strcpy(r.comm, "python3");
  std::strcpy(r.filename, "/usr/bin/python3");
  r.filename_len = sizeof("/usr/bin/python3");
  const char args[] = "python3\0train.py\0--epochs";  // last one cut, no NUL
  std::memcpy(r.args, args, sizeof(args) - 1);
  r.args_len = sizeof(args) - 1;
  return r;
}

TEST(StepEvent, ExecRecordDecodesArgvAndHold) {
  Event e = decode(exec_record(), 5000);
  EXPECT_EQ(e.type, EventType::exec);
  EXPECT_TRUE(e.held);
  EXPECT_TRUE(e.main);
  EXPECT_EQ(e.filename, "/usr/bin/python3");
  EXPECT_EQ(e.argv, (std::vector<std::string>{"python3", "train.py", "--epochs"}));
  EXPECT_TRUE(e.argv_truncated);
  EXPECT_EQ(e.wall_ns, 6000u);
  EXPECT_EQ(e.cgroup_id, 7u);
  EXPECT_EQ(e.task_cgroup_id, 8u);
}

TEST(StepEvent, CommWithoutNulStopsAtArrayEnd) {
  step_record r = exec_record();
  std::memset(r.comm, 'x', sizeof(r.comm));
  EXPECT_EQ(decode(r, 0).comm, std::string(16, 'x'));
}

TEST(StepEvent, WaitStatusDecoding) {
  auto exited = ExitStatus::from_wait_status(42 << 8);
  EXPECT_EQ(exited.code, 42);
  EXPECT_FALSE(exited.signal);
  auto killed = ExitStatus::from_wait_status(9);
  EXPECT_FALSE(killed.code);
  EXPECT_EQ(killed.signal, 9);
  auto dumped = ExitStatus::from_wait_status(0x80 | 11);
  EXPECT_EQ(dumped.signal, 11);
  EXPECT_TRUE(dumped.core_dumped);
  EXPECT_EQ(ExitStatus::from_wait_status(0).code, 0);
}

TEST(StepEvent, ExecJson) {
  auto j = to_json(decode(exec_record(), 0));
  EXPECT_EQ(j["type"], "exec");
  EXPECT_EQ(j["held"], true);
  EXPECT_EQ(j["main"], true);
  EXPECT_EQ(j["pid"], 100);
  EXPECT_EQ(j["cgroup_id"], 7);
  EXPECT_EQ(j["argv"][1], "train.py");
  EXPECT_EQ(j["argv_truncated"], true);
  EXPECT_EQ(j["source"], "bpf");
  EXPECT_FALSE(j.contains("exit_code"));
}

TEST(StepEvent, StepEndJsonCarriesMainExitOrSignal) {
  step_record r{};
  r.type = STEP_REC_STEP_END;
  r.flags = STEP_F_MAIN_EXITED;
  r.main_tgid = 100;
  r.main_exit_code = 9;  // SIGKILL
  auto j = to_json(decode(r, 0));
  EXPECT_EQ(j["type"], "step_end");
  EXPECT_EQ(j["main_pid"], 100);
  EXPECT_TRUE(j["exit_code"].is_null());
  EXPECT_EQ(j["signal"], 9);
  EXPECT_EQ(j["signal_name"], "SIGKILL");

  r.main_exit_code = 1 << 8;
  j = to_json(decode(r, 0));
  EXPECT_EQ(j["exit_code"], 1);
  EXPECT_TRUE(j["signal"].is_null());

  r.flags = 0;  // main never seen exiting: both unknown, both present
  j = to_json(decode(r, 0));
  EXPECT_TRUE(j.contains("exit_code") && j["exit_code"].is_null());
  EXPECT_TRUE(j.contains("signal") && j["signal"].is_null());
}

TEST(StepEvent, LostJsonSaysHowMany) {
  Event e;
  e.type = EventType::lost;
  e.lost = 17;
  auto j = to_json(e);
  EXPECT_EQ(j["type"], "lost");
  EXPECT_EQ(j["lost"], 17);
  EXPECT_EQ(j.dump().find('\n'), std::string::npos);  // one line per event
}

}  // namespace
}  // namespace stepsnap::bpf
