#include "runner/exec/kfp_metadata.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runner/exec/options.h"

namespace stepsnap::runner {
namespace {

TEST(KfpMetadata, OneInlineMarkdownOutputLinkingEachSnapshot) {
  auto text = kfp_ui_metadata({"train", "r1", "prep_data"}, {"r1.prep_data.ws.pre"},
                              {"r1.prep_data.ws.post"}, "http://node7:9477/");
  auto j = nlohmann::json::parse(text);
  ASSERT_EQ(j["outputs"].size(), 1u);
  const auto& out = j["outputs"][0];
  EXPECT_EQ(out["type"], "markdown");
  EXPECT_EQ(out["storage"], "inline");
  std::string md = out["source"];
  EXPECT_NE(md.find("[r1.prep\\_data.ws.pre](http://node7:9477/snapshots/r1.prep_data.ws.pre)"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("[r1.prep\\_data.ws.post](http://node7:9477/snapshots/r1.prep_data.ws.post)"),
            std::string::npos);
  EXPECT_NE(md.find("(http://node7:9477/runs/train/r1)"), std::string::npos);
}

TEST(KfpMetadata, SaysWhenAPhaseHasNoSnapshot) {
  auto j = nlohmann::json::parse(kfp_ui_metadata({"p", "r", "s"}, {}, {"x"}, kDefaultViewUrl));
  std::string md = j["outputs"][0]["source"];
  EXPECT_NE(md.find("| pre (before the step) | none taken |"), std::string::npos) << md;
}

TEST(KfpMetadata, WrittenWholeByRename) {
  std::string dir = (std::filesystem::temp_directory_path() / "kfp-XXXXXX").string();
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  std::string path = dir + "/mlpipeline-ui-metadata.json";
  ASSERT_TRUE(write_file_atomically(path, "{\"outputs\":[]}\n"));
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_EQ(s.str(), "{\"outputs\":[]}\n");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);  // no temporary left
  auto bad = write_file_atomically(dir + "/no/such/dir/x.json", "x");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("No such file or directory"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(KfpMetadata, OptionRefusesAMissingDirectoryAndNoAgent) {
  auto missing = parse_exec_options({"--pipeline", "p", "--run", "r", "--step", "s",
                                     "--kfp-ui-metadata", "/no/such/dir/m.json", "--", "true"});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("bad --kfp-ui-metadata"), std::string::npos)
      << missing.error().message();
  auto no_agent =
      parse_exec_options({"--no-agent", "--kfp-ui-metadata", "/tmp/m.json", "--", "true"});
  ASSERT_FALSE(no_agent);
  EXPECT_NE(no_agent.error().message().find("needs the agent"), std::string::npos);
  auto ok = parse_exec_options({"--pipeline", "p", "--run", "r", "--step", "s", "--kfp-ui-metadata",
                                "/tmp/m.json", "--view-url", "http://10.0.0.5:9477", "--", "true"});
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->kfp_ui_metadata, "/tmp/m.json");
  EXPECT_EQ(ok->view_url, "http://10.0.0.5:9477");
}

}  // namespace
}  // namespace stepsnap::runner
