// Kale notebooks into pipelines (label unit): the nbformat reader, Kale's
// tag language, and compile_notebook end to end with the real Python
// analysis (python3 and python/stepsnap_kale), on small notebooks written
// here. Every error is one line naming the cell.
#include "runner/pipeline/notebook.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/pipeline/notebook_compile.h"
#include "runner/pipeline/pipeline_spec.h"

namespace stepsnap::runner {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

json code(const std::string& source, const std::vector<std::string>& tags = {}) {
  json c = {{"cell_type", "code"},
            {"metadata", json::object()},
            {"source", source},
            {"outputs", json::array()},
            {"execution_count", nullptr}};
  if (!tags.empty()) c["metadata"]["tags"] = tags;
  return c;
}

json markdown(const std::string& text) {
  return {{"cell_type", "markdown"}, {"metadata", json::object()}, {"source", text}};
}

std::string notebook(const std::vector<json>& cells, json metadata = json::object()) {
  return json({{"nbformat", 4}, {"nbformat_minor", 5}, {"metadata", metadata}, {"cells", cells}})
      .dump();
}

Result<KaleNotebook> tags_of(const std::vector<json>& cells) {
  auto nb = parse_notebook(notebook(cells), "t.ipynb");
  if (!nb) return tl::unexpected(nb.error());
  return parse_kale_tags(*nb, "t.ipynb");
}

std::string tag_error(const std::vector<json>& cells) {
  auto k = tags_of(cells);
  if (k) return "(no error)";
  return k.error().message();
}

TEST(NotebookReader, ReadsCellsTagsAndKaleMetadata) {
  json cell = code("", {"imports"});
  cell["source"] = json::array({"import os\n", "import sys"});
  auto nb = parse_notebook(
      notebook({markdown("# hi"), cell}, {{"kubeflow_notebook", {{"pipeline_name", "p"}}}}),
      "t.ipynb");
  ASSERT_TRUE(nb) << nb.error().message();
  ASSERT_EQ(nb->cells.size(), 2u);
  EXPECT_EQ(nb->cells[0].type, "markdown");
  EXPECT_EQ(nb->cells[1].index, 1u);
  EXPECT_EQ(nb->cells[1].source, "import os\nimport sys");
  EXPECT_EQ(nb->cells[1].tags, std::vector<std::string>{"imports"});
  EXPECT_EQ(nb->kale_metadata.value("pipeline_name", ""), "p");
}

TEST(NotebookReader, RefusesWhatIsNotAnNbformat4Notebook) {
  auto not_json = parse_notebook("{nope", "t.ipynb");
  ASSERT_FALSE(not_json);
  EXPECT_NE(not_json.error().message().find("not valid JSON"), std::string::npos);
  auto v3 = parse_notebook(R"({"nbformat": 3, "cells": []})", "t.ipynb");
  ASSERT_FALSE(v3);
  EXPECT_NE(v3.error().message().find("nbformat 3 is not supported"), std::string::npos)
      << v3.error().message();
  auto no_cells = parse_notebook(R"({"pipeline": "x"})", "t.ipynb");
  ASSERT_FALSE(no_cells);
  EXPECT_NE(no_cells.error().message().find("not a notebook"), std::string::npos);
}

TEST(KaleTags, SectionsAndStepsWithKalesMeaning) {
  auto k = tags_of({
      markdown("intro"),                           // 0: prose, ignored
      code("x = 0"),                               // 1: before any tag: dropped
      code("import os", {"imports"}),              // 2
      code("import sys"),                          // 3: continues imports
      code("def f(): pass", {"functions"}),        // 4
      code("n = 1", {"pipeline-parameters"}),      // 5
      code("a = n", {"block:load"}),               // 6
      code("never()", {"skip"}),                   // 7: dropped
      code("b = a"),                               // 8: continues load, not skip
      code("c = b", {"step:train", "prev:load"}),  // 9: step: is block:
      code("d = c", {"block:train"}),              // 10: same block again, contiguous
      code("print(d)", {"pipeline-metrics"}),      // 11
  });
  ASSERT_TRUE(k) << k.error().message();
  EXPECT_EQ(k->imports, (std::vector<std::size_t>{2, 3}));
  EXPECT_EQ(k->functions, (std::vector<std::size_t>{4}));
  EXPECT_EQ(k->parameters, (std::vector<std::size_t>{5}));
  EXPECT_EQ(k->metrics, (std::vector<std::size_t>{11}));
  ASSERT_EQ(k->steps.size(), 2u);
  EXPECT_EQ(k->steps[0].name, "load");
  EXPECT_EQ(k->steps[0].cells, (std::vector<std::size_t>{6, 8}));
  EXPECT_TRUE(k->steps[0].prev.empty());
  EXPECT_EQ(k->steps[1].name, "train");
  EXPECT_EQ(k->steps[1].cells, (std::vector<std::size_t>{9, 10}));
  EXPECT_EQ(k->steps[1].prev, std::vector<std::string>{"load"});
  ASSERT_EQ(k->warnings.size(), 1u);
  EXPECT_NE(k->warnings[0].find("cell 1 (untagged): code before the first tagged cell"),
            std::string::npos)
      << k->warnings[0];
}

TEST(KaleTags, MemoryLimitAppliesOtherClusterTagsWarnOnceEach) {
  auto k = tags_of(
      {code("a = 1", {"block:a", "limit:memory:512Mi", "limit:nvidia.com/gpu:1",
                      "annotation:example.com/team:ml", "label:app:kale", "image:python:3.11"})});
  ASSERT_TRUE(k) << k.error().message();
  EXPECT_EQ(k->steps[0].memory_bytes, 512ull << 20);
  ASSERT_EQ(k->warnings.size(), 4u);
  for (const auto& w : k->warnings) {
    EXPECT_NE(w.find("t.ipynb: cell 0 (block:a): tag "), std::string::npos) << w;
    EXPECT_NE(w.find("no node equivalent; ignored"), std::string::npos) << w;
    EXPECT_EQ(std::count(w.begin(), w.end(), '\n'), 0) << w;
  }
}

TEST(KaleTags, QuantitiesAreKubernetesOnes) {
  EXPECT_EQ(parse_quantity("2Gi"), 2ull << 30);
  EXPECT_EQ(parse_quantity("1G"), 1000000000ull);
  EXPECT_EQ(parse_quantity("300M"), 300000000ull);
  EXPECT_EQ(parse_quantity("4096"), 4096ull);
  EXPECT_FALSE(parse_quantity("lots"));
  EXPECT_FALSE(parse_quantity("1.5Gi"));
  EXPECT_FALSE(parse_quantity("99999999999999999999Gi"));
}

TEST(KaleTags, EachErrorIsOneLineNamingTheCell) {
  struct Case {
    std::vector<json> cells;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{code("a = 1", {"block:a", "bogus"})}, "cell 0 (block:a): unknown tag \"bogus\""},
      {{code("a = 1", {"block:A"})}, "cell 0 (block:A): unknown tag \"block:A\""},
      {{code("a = 1", {"block:a"}), code("b = a", {"block:b", "prev:c"})},
       "cell 1 (block:b): prev:c names no block defined above this cell"},
      {{code("b = 1", {"block:b", "prev:b"})},
       "cell 0 (block:b): prev:b makes the block depend "
       "on itself, a cycle"},
      {{code("a = 1", {"block:a"}), code("b = 1", {"block:b"}), code("c = 1", {"block:a"})},
       "cell 2 (block:a): a second block named a (the first starts at cell 0 (block:a))"},
      {{code("# only a comment\n\n%time", {"block:a"})}, "cell 0 (block:a): block a has no code"},
      {{code("a = 1", {"block:a", "imports"})}, "cell 0 (block:a): has 2 section tags"},
      {{code("a = 1", {"block:a"}), code("print(a)", {"pipeline-metrics"}),
        code("b = 1", {"block:b"})},
       "cell 2 (block:b): a block after the pipeline-metrics cells"},
      {{code("import os", {"imports", "prev:a"})},
       "cell 0 (imports): prev:a on a cell that is not a block"},
      {{code("a = 1", {"block:a", "limit:memory:huge"})},
       "cell 0 (block:a): tag limit:memory:huge: the memory limit is not a quantity"},
      {{code("import os", {"imports"})}, "t.ipynb: no cell is tagged block:NAME"},
  };
  for (const auto& c : cases) {
    std::string e = tag_error(c.cells);
    EXPECT_NE(e.find(c.expected), std::string::npos)
        << "expected: " << c.expected << "\ngot: " << e;
    EXPECT_EQ(e.rfind("t.ipynb", 0), 0u) << e;
    EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 0) << e;
  }
}

// compile_notebook with the real analysis: notebooks written to a folder
// that stands for the workspace volume's mount.
class NotebookCompile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/stepsnap-nbtest-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ + "/ws/project");
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result<CompiledNotebook> compile(const std::vector<json>& cells,
                                   std::vector<std::pair<std::string, std::string>> params = {},
                                   json metadata = json::object(),
                                   std::vector<std::pair<std::string, std::string>> volumes = {}) {
    path_ = dir_ + "/ws/project/house.ipynb";
    std::ofstream(path_) << notebook(cells, metadata);
    if (volumes.empty()) volumes = {{"ws", dir_ + "/ws"}};
    return compile_notebook({path_, volumes, params, STEPSNAP_PYTHON_DIR});
  }

  // The value after flag in step i's command ("" when absent).
  static std::string arg(const CompiledNotebook& c, std::size_t i, const std::string& flag) {
    const auto& cmd = c.spec.steps.at(i).command;
    auto it = std::find(cmd.begin(), cmd.end(), flag);
    return it == cmd.end() || it + 1 == cmd.end() ? "" : *(it + 1);
  }

  std::string error_of(const std::vector<json>& cells,
                       std::vector<std::pair<std::string, std::string>> params = {}) {
    auto c = compile(cells, params);
    return c ? "(no error)" : c.error().message();
  }

  std::string dir_, path_;
};

TEST_F(NotebookCompile, ThePipelineRunsEachBlockAsAPython3ProcessInTheNotebooksFolder) {
  auto c = compile({code("import math", {"imports"}),
                    code("def area(r):\n    return math.pi * r * r * scale", {"functions"}),
                    code("radius = 2\nscale = 1.0", {"pipeline-parameters"}),
                    code("values = [area(radius)]", {"block:load"}),
                    code("total = sum(values)", {"block:sum", "prev:load", "limit:memory:1Gi"}),
                    code("print(total)", {"pipeline-metrics"})},
                   {{"radius", "3"}});
  ASSERT_TRUE(c) << c.error().message();
  const PipelineSpec& s = c->spec;
  EXPECT_EQ(s.pipeline, "house");  // from the file name, without metadata
  ASSERT_EQ(s.volumes.size(), 1u);
  EXPECT_EQ(s.volumes[0].name, "ws");
  EXPECT_EQ(s.workdir, dir_ + "/ws/project");
  EXPECT_EQ(s.marshal, "project/.house.ipynb.kale.marshal.dir");
  ASSERT_EQ(s.steps.size(), 2u);
  EXPECT_EQ(s.steps[0].command[0], "python3");
  EXPECT_EQ(arg(*c, 0, "-m"), "stepsnap_kale.step");
  EXPECT_EQ(arg(*c, 0, "--notebook"), path_);
  EXPECT_EQ(arg(*c, 0, "--marshal"), dir_ + "/ws/project/.house.ipynb.kale.marshal.dir");
  EXPECT_EQ(arg(*c, 0, "--prelude"), "0,1");
  EXPECT_EQ(arg(*c, 0, "--parameters"), "2");
  EXPECT_EQ(arg(*c, 0, "--cells"), "3");
  EXPECT_EQ(arg(*c, 0, "--inputs"), "");
  EXPECT_EQ(arg(*c, 0, "--outputs"), "values");
  EXPECT_EQ(arg(*c, 0, "--param"), "radius=3");
  EXPECT_EQ(arg(*c, 0, "--sha256").size(), 64u);
  EXPECT_EQ(arg(*c, 1, "--inputs"), "values");
  EXPECT_EQ(arg(*c, 1, "--metrics"), "total");
  EXPECT_EQ(s.steps[1].after, std::vector<std::string>{"load"});
  EXPECT_EQ(s.steps[1].memory_bytes, 1ull << 30);
  ASSERT_EQ(c->metrics.size(), 1u);
  EXPECT_EQ(c->metrics[0].first, "sum");

  // What compile prints is a pipeline file that reads back as the same spec.
  auto again = parse_pipeline(pipeline_to_json(s), "compiled.json");
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(pipeline_to_json(*again), pipeline_to_json(s));
  EXPECT_EQ(again->steps[1].memory_bytes, 1ull << 30);
}

TEST_F(NotebookCompile, VolumesComeFromMetadataFlagsWinAndTheWorkspaceIsFirst) {
  json meta = {{"kubeflow_notebook",
                {{"pipeline_name", "houses"},
                 {"volumes",
                  {{{"name", "data"}, {"mount_point", "/data"}, {"type", "pvc"}},
                   {{"name", "old-ws"}, {"mount_point", dir_ + "/ws"}, {"type", "clone"}}}}}}};
  auto c = compile({code("a = 1", {"block:a"})}, {}, meta,
                   {{"scratch", "/scratch"}, {"ws", dir_ + "/ws/"}});
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->spec.pipeline, "houses");
  ASSERT_EQ(c->spec.volumes.size(), 3u);
  EXPECT_EQ(c->spec.volumes[0].name, "ws");  // the flag's, not old-ws: same mount
  EXPECT_EQ(c->spec.volumes[0].mount, dir_ + "/ws");
  EXPECT_EQ(c->spec.volumes[1].name, "scratch");
  EXPECT_EQ(c->spec.volumes[2].name, "data");
  EXPECT_EQ(c->spec.marshal, "project/.house.ipynb.kale.marshal.dir");

  auto off = compile({code("a = 1", {"block:a"})}, {}, json::object(), {{"data", "/data"}});
  ASSERT_FALSE(off);
  EXPECT_NE(off.error().message().find("is on none of the pipeline's volumes"), std::string::npos)
      << off.error().message();
}

TEST_F(NotebookCompile, AnalysisErrorsNameTheCellAndLine) {
  EXPECT_NE(error_of({code("a = 1", {"block:a"}), code("b = (\n", {"block:b", "prev:a"})})
                .find("cell 1 (block:b), line 1: Python syntax error"),
            std::string::npos);
  std::string undefined = error_of({code("a = 1", {"block:a"}), code("x = 2", {"block:other"}),
                                    code("b = a + 1\nc = x", {"block:b", "prev:a"})});
  EXPECT_NE(undefined.find("cell 2 (block:b), line 2: step b uses 'x'"), std::string::npos)
      << undefined;
  EXPECT_NE(error_of({code("n = len('x')", {"pipeline-parameters"}), code("a = n", {"block:a"})})
                .find("cell 0 (pipeline-parameters), line 1: a pipeline parameter is one "
                      "assignment"),
            std::string::npos);
  EXPECT_NE(error_of({code("a = 1", {"block:a"}), code("print(a + 1)", {"pipeline-metrics"})})
                .find("cell 1 (pipeline-metrics), line 1: a pipeline-metrics cell holds only "
                      "print(NAME) lines"),
            std::string::npos);
  std::string param = error_of({code("n = 1", {"pipeline-parameters"}), code("a = n", {"block:a"})},
                               {{"n", "many"}});
  EXPECT_NE(param.find("--param n=many: n is a pipeline parameter of type int"), std::string::npos)
      << param;
  EXPECT_NE(error_of({code("a = 1", {"block:a"})}, {{"nope", "1"}})
                .find("--param nope: the notebook has no such pipeline parameter"),
            std::string::npos);
}

TEST_F(NotebookCompile, OnlyAncestorsFeedAStepAndTheNearestOneSavesTheName) {
  auto c = compile({code("x = 1\ny = 1", {"block:a"}), code("x = 2", {"block:b", "prev:a"}),
                    code("z = x + y", {"block:c", "prev:b"})});
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(arg(*c, 0, "--outputs"), "y");  // b's x is the nearer one
  EXPECT_EQ(arg(*c, 1, "--outputs"), "x");
  EXPECT_EQ(arg(*c, 2, "--inputs"), "x,y");
}

}  // namespace
}  // namespace stepsnap::runner
