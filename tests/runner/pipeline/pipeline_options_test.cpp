// `runner pipeline run` and `runner pipeline compile` command lines (label
// unit): the notebook flags and where they are refused.
#include "runner/pipeline/pipeline_options.h"

#include <gtest/gtest.h>

namespace stepsnap::runner {
namespace {

TEST(PipelineOptions, NotebookFlagsInCommandLineOrder) {
  auto o = parse_pipeline_run_options({"/w/nb.ipynb", "--volume", "ws:/w", "--param", "SEED=7",
                                       "--volume", "data:/data", "--param", "NAME=a=b"});
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->file, "/w/nb.ipynb");
  ASSERT_EQ(o->volumes.size(), 2u);
  EXPECT_EQ(o->volumes[1], (std::pair<std::string, std::string>{"data", "/data"}));
  ASSERT_EQ(o->params.size(), 2u);
  EXPECT_EQ(o->params[1], (std::pair<std::string, std::string>{"NAME", "a=b"}));
}

TEST(PipelineOptions, NotebookFlagsAreRefusedForAPipelineFileAndWhenMalformed) {
  auto json_file = parse_pipeline_run_options({"p.json", "--volume", "ws:/w"});
  ASSERT_FALSE(json_file);
  EXPECT_NE(json_file.error().message().find("--volume and --param are for notebooks"),
            std::string::npos);
  for (const char* bad : {"ws", ":/w", "ws:", "bad/name:/w"})
    EXPECT_FALSE(parse_pipeline_run_options({"nb.ipynb", "--volume", bad})) << bad;
  EXPECT_FALSE(parse_pipeline_run_options({"nb.ipynb", "--param", "=1"}));
  EXPECT_FALSE(parse_pipeline_run_options({"nb.ipynb", "--param", "novalue"}));
}

TEST(PipelineOptions, ParallelIsAWholeNumberOfSteps) {
  auto d = parse_pipeline_run_options({"p.json"});
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->parallel, 0u);  // the default, decided at run time
  auto o = parse_pipeline_run_options({"p.json", "--parallel", "3"});
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->parallel, 3u);
  for (const char* bad : {"0", "-1", "x", "65", "2.5", ""}) {
    auto e = parse_pipeline_run_options({"p.json", "--parallel", bad});
    ASSERT_FALSE(e) << bad;
    EXPECT_NE(e.error().message().find("from 1 to 64"), std::string::npos) << e.error().message();
  }
}

TEST(PipelineOptions, CompileTakesOnlyANotebook) {
  auto o = parse_pipeline_compile_options({"nb.ipynb", "--param", "A=1"});
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->params.size(), 1u);
  auto json_file = parse_pipeline_compile_options({"p.json"});
  ASSERT_FALSE(json_file);
  EXPECT_NE(json_file.error().message().find("runner pipeline compile takes a notebook"),
            std::string::npos);
  EXPECT_FALSE(parse_pipeline_compile_options({"nb.ipynb", "--run", "r1"}));
  EXPECT_TRUE(parse_pipeline_compile_options({"--help"})->help);
}

}  // namespace
}  // namespace stepsnap::runner
