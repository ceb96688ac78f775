// The rules in force: config overlaid by API rules, which a restart reads
// back from the rules file (a real file in a temporary directory).
#include "agent/retention/retention_store.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

TEST(RetentionStore, ApiRulesOverlayTheConfigAndSurviveAReopen) {
  testing::TempDir dir;
  const std::string file = dir.file("retention.json");
  RetentionRules config{{"*", {.keep_runs = 10}}, {"nightly", {.keep_runs = 3}}};
  auto store = RetentionStore::open(config, file);
  ASSERT_TRUE(store) << store.error().message();
  ASSERT_TRUE(store->set("nightly", RetentionRule{.max_age_seconds = 3600}));
  EXPECT_EQ(store->rules().at("nightly"), (RetentionRule{.max_age_seconds = 3600}));
  EXPECT_EQ(store->rules().at("*").keep_runs, 10u);
  auto shown = store->show();
  ASSERT_EQ(shown.size(), 2u);
  EXPECT_EQ(shown[1]["pipeline"], "nightly");
  EXPECT_EQ(shown[1]["source"], "api");

  auto again = RetentionStore::open(config, file);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->rules(), store->rules());

  // Clearing the API rule brings the config's back, also after a reopen.
  ASSERT_TRUE(again->set("nightly", std::nullopt));
  EXPECT_EQ(again->rules().at("nightly").keep_runs, 3u);
  EXPECT_EQ(RetentionStore::open(config, file)->rules(), config);
}

TEST(RetentionStore, AFileThatDoesNotParseIsRefusedByName) {
  testing::TempDir dir;
  const std::string file = dir.file("retention.json");
  std::ofstream(file) << "{\"rules\": [";
  auto store = RetentionStore::open({}, file);
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().message().find(file), std::string::npos) << store.error().message();
  std::ofstream(file, std::ios::trunc) << R"({"version":1,"rules":{"p":{"keep_runs":"x"}}})";
  EXPECT_FALSE(RetentionStore::open({}, file));
}

TEST(RetentionStore, AFailedWriteLeavesTheRulesAsTheyWere) {
  testing::TempDir dir;
  // The file's folder does not exist: the write fails, nothing changes.
  auto store = RetentionStore::open({}, dir.file("missing/retention.json"));
  ASSERT_TRUE(store);
  EXPECT_FALSE(store->set("p", RetentionRule{.keep_runs = 1}));
  EXPECT_TRUE(store->rules().empty());
}

}  // namespace
}  // namespace stepsnap::agent
