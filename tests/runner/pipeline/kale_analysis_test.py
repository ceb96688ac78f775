"""Unit tests of python/stepsnap_kale (ctest: unit.KaleAnalysis.Python).

The variable flow on tricky Python, the parameters and metrics cells, the
marshal folder's formats and errors, and one step run as a process.
"""

import json
import os
import pickle
import subprocess
import sys
import tempfile
import unittest

from stepsnap_kale import analysis, marshal_dir


def cells(*sources, start=0):
    return [{"cell": start + i, "source": s} for i, s in enumerate(sources)]


def flow(steps, prelude=(), parameters=(), metrics=()):
    """steps: [(name, [prev], [sources])] -> {name: (inputs, outputs)}."""
    request = {
        "prelude": cells(*prelude, start=100),
        "parameters": cells(*parameters, start=200),
        "metrics": cells(*metrics, start=300),
        "steps": [
            {"name": n, "prev": p, "cells": cells(*src, start=10 * i)}
            for i, (n, p, src) in enumerate(steps)
        ],
    }
    answer = analysis.analyse(request)
    if not answer["ok"]:
        raise analysis.CellError(answer["cell"], answer["line"], answer["message"])
    return {s["name"]: (s["inputs"], s["outputs"]) for s in answer["steps"]}, answer


class VariableFlow(unittest.TestCase):
    def test_a_chain_passes_what_is_used(self):
        f, _ = flow([("a", [], ["x = 1\ny = 2\nunused = 3"]), ("b", ["a"], ["z = x + y"])])
        self.assertEqual(f["a"], ([], ["x", "y"]))
        self.assertEqual(f["b"], (["x", "y"], []))

    def test_augmented_assignment_reads_first(self):
        f, _ = flow([("a", [], ["total = 0"]), ("b", ["a"], ["total += 1"]), ("c", ["b"], ["print(total)"])])
        self.assertEqual(f["b"], (["total"], ["total"]))
        self.assertEqual(f["c"], (["total"], []))
        self.assertEqual(f["a"][1], ["total"])

    def test_a_name_bound_before_use_in_the_step_is_not_an_input(self):
        f, _ = flow([("a", [], ["x = 1"]), ("b", ["a"], ["x = 5\nprint(x)"])])
        self.assertEqual(f["b"], ([], []))
        self.assertEqual(f["a"], ([], []))

    def test_del_reads_the_name_and_the_step_no_longer_defines_it(self):
        f, _ = flow([("a", [], ["big = 1\nkeep = 2"]), ("b", ["a"], ["del big"]),
                     ("c", ["b"], ["print(keep)"])])
        self.assertEqual(f["b"][0], ["big"])
        self.assertEqual(f["c"][0], ["keep"])
        self.assertEqual(f["a"][1], ["big", "keep"])
        # b deleted big, so c's big comes from a, the nearest step that still has it.
        f, _ = flow([("a", [], ["big = 1"]), ("b", ["a"], ["del big"]), ("c", ["b"], ["print(big)"])])
        self.assertEqual(f["c"][0], ["big"])
        self.assertEqual(f["b"][1], [])

    def test_comprehension_variables_stay_inside(self):
        f, _ = flow([("a", [], ["rows = [1, 2]\nk = 3"]),
                     ("b", ["a"], ["sq = [r * k for r in rows if r]\nd = {r: r for r in sq}\n"
                                   "g = list(i for i in range(2))"])])
        self.assertEqual(f["b"][0], ["k", "rows"])

    def test_globals_used_only_inside_functions_defined_upstream(self):
        f, _ = flow(
            [("load", [], ["df = [1, 2]\nfactor = 2"]), ("use", ["load"], ["result = scaled()"])],
            prelude=["def scaled():\n    return [v * factor for v in df]"],
        )
        self.assertEqual(f["use"][0], ["df", "factor"])
        # A function of an upstream step pulls its globals the same way.
        f, _ = flow([("a", [], ["base = 10\ndef add(v):\n    return v + base"]),
                     ("b", ["a"], ["r = add(1)"])])
        self.assertEqual(f["b"][0], ["add", "base"])

    def test_a_function_local_is_not_a_global(self):
        f, _ = flow([("a", [], ["def g(v):\n    w = v * 2\n    return w\nr = g(1)"])])
        self.assertEqual(f["a"], ([], []))

    def test_imports_inside_cells_are_definitions(self):
        f, _ = flow([("a", [], ["import json as j\nfrom os import path"]),
                     ("b", ["a"], ["s = j.dumps(path.sep)"])])
        self.assertEqual(f["b"][0], ["j", "path"])
        self.assertEqual(f["a"][1], ["j", "path"])

    def test_parameters_shadow_upstream_names(self):
        f, _ = flow([("a", [], ["n = 99\nm = 1"]), ("b", ["a"], ["print(n, m)"])], parameters=["n = 3"])
        self.assertEqual(f["b"][0], ["m"])

    def test_prelude_and_builtins_are_never_inputs(self):
        f, _ = flow([("a", [], ["x = np.zeros(len(range(3)))"])], prelude=["import numpy as np"])
        self.assertEqual(f["a"], ([], []))

    def test_classes_walrus_lambda_try_with(self):
        f, _ = flow([
            ("a", [], ["scale = 2\nlimit = 3"]),
            ("b", ["a"], [
                "class P:\n    unit = scale\n    def m(self):\n        return limit\n"
                "if (w := 4) > 1:\n    pass\n"
                "h = lambda v: v + w\n"
                "try:\n    pass\nexcept Exception as err:\n    print(err)\n"
                "with open('/dev/null') as fh:\n    fh.read()\n"
            ]),
        ])
        # limit is read only when a method runs: nothing here calls one.
        self.assertEqual(f["b"][0], ["scale"])
        f, _ = flow([("a", [], ["scale = 2\nlimit = 3\nclass P:\n    def m(self):\n        return limit"]),
                     ("b", ["a"], ["v = P().m()"])])
        self.assertEqual(f["b"][0], ["P", "limit"])

    def test_a_name_defined_nowhere_earlier_names_cell_and_line(self):
        with self.assertRaises(analysis.CellError) as e:
            flow([("a", [], ["x = 1"]), ("b", [], ["y = 2\nz = x"])])
        self.assertEqual((e.exception.cell, e.exception.line), (10, 2))
        self.assertIn("step b uses 'x'", e.exception.message)

    def test_only_ancestors_count(self):
        with self.assertRaises(analysis.CellError):
            flow([("a", [], ["x = 1"]), ("b", [], ["y = 1"]), ("c", ["b"], ["print(x)"])])

    def test_magics_are_comments_and_syntax_errors_name_the_line(self):
        f, _ = flow([("a", [], ["%matplotlib inline\n!ls\nx = 1"]), ("b", ["a"], ["print(x)"])])
        self.assertEqual(f["b"][0], ["x"])
        with self.assertRaises(analysis.CellError) as e:
            flow([("a", [], ["x = 1\ny = (\n"])])
        self.assertIn("syntax error", e.exception.message)


class ParametersAndMetrics(unittest.TestCase):
    def test_literals_and_typed_overrides(self):
        p = analysis.parameters_of(cells("a = 1\nb = -0.5\nc = 'x'\nd = True"))
        self.assertEqual(p, [("a", 1), ("b", -0.5), ("c", "x"), ("d", True)])
        o = analysis.apply_overrides(p, {"a": "7", "b": "2", "c": "hello", "d": "false"})
        self.assertEqual(o, [("a", 7), ("b", 2.0), ("c", "hello"), ("d", False)])
        self.assertIs(type(o[1][1]), float)
        with self.assertRaises(ValueError):
            analysis.apply_overrides(p, {"a": "1.5"})
        with self.assertRaises(analysis.CellError):
            analysis.parameters_of(cells("a = b = 1"))
        with self.assertRaises(analysis.CellError):
            analysis.parameters_of(cells("a = [1]"))

    def test_each_metric_belongs_to_the_last_step_defining_it(self):
        _, answer = flow([("a", [], ["acc = 0.5\nloss = 1"]), ("b", ["a"], ["acc = acc + 0.1"])],
                         metrics=["print(acc)\nprint(loss)"])
        by = {s["name"]: s["metrics"] for s in answer["steps"]}
        self.assertEqual(by, {"a": ["loss"], "b": ["acc"]})


class MarshalFolder(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def test_formats_by_type_and_round_trip(self):
        import json as json_module
        files = {n: marshal_dir.save(self.dir, n, v)
                 for n, v in {"d": {"a": [1, 2]}, "mod": json_module}.items()}
        self.assertEqual(files["mod"], "mod.module")
        self.assertIn(files["d"], ("d.dillpkl", "d.pkl"))
        try:
            import numpy as np
            import pandas as pd
        except ImportError:
            np = pd = None
        if np is not None:
            self.assertEqual(marshal_dir.save(self.dir, "arr", np.arange(6.0)), "arr.npy")
            self.assertEqual(marshal_dir.save(self.dir, "df", pd.DataFrame({"x": [1, 2]})), "df.pdpkl")
            # np.load reads the file as numpy wrote it: a person can open it.
            self.assertEqual(list(np.load(os.path.join(self.dir, "arr.npy"))), [0, 1, 2, 3, 4, 5])
        values = marshal_dir.load_all(self.dir)
        self.assertEqual(values["d"], {"a": [1, 2]})
        self.assertIs(values["mod"], json_module)
        if np is not None:
            self.assertEqual(values["df"]["x"].tolist(), [1, 2])
        ns = {}
        self.assertIn("d", marshal_dir.restore(self.dir, ns))
        self.assertEqual(ns["d"], {"a": [1, 2]})

    def test_a_value_that_cannot_be_saved_names_the_variable_and_type(self):
        with self.assertRaises(marshal_dir.MarshalError) as e:
            marshal_dir.save(self.dir, "gen", (i for i in range(3)))
        self.assertIn("cannot save variable 'gen' (type generator)", str(e.exception))
        self.assertEqual(os.listdir(self.dir), [])  # no half-written file

    def test_a_missing_variable_says_so(self):
        with self.assertRaises(marshal_dir.MarshalError) as e:
            marshal_dir.load(self.dir, "nope")
        self.assertIn("variable 'nope' is not in the marshal folder", str(e.exception))


class StepProcess(unittest.TestCase):
    """step.py as runner runs it: one process per step, on a notebook."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.marshal = os.path.join(self.dir, ".nb.ipynb.kale.marshal.dir")
        os.mkdir(self.marshal)
        self.nb = os.path.join(self.dir, "nb.ipynb")
        sources = ["import math", "n = 2", "xs = [math.sqrt(i) for i in range(n)]",
                   "total = sum(xs)\nprint('total', total)", "raise ValueError('boom')"]
        with open(self.nb, "w") as f:
            json.dump({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                       "cells": [{"cell_type": "code", "metadata": {}, "source": s,
                                  "outputs": []} for s in sources]}, f)

    def step(self, *args, env=None):
        cmd = [sys.executable, "-m", "stepsnap_kale.step", "--notebook", self.nb,
               "--marshal", self.marshal, "--prelude", "0", "--parameters", "1", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **(env or {})))

    def test_outputs_inputs_parameters_and_metrics(self):
        r = self.step("--step", "a", "--cells", "2", "--outputs", "xs", "--param", "n=4")
        self.assertEqual(r.returncode, 0, r.stderr)
        xs = marshal_dir.load(self.marshal, "xs")
        self.assertEqual(len(xs), 4)  # the override, typed as the cell's int
        metrics_file = os.path.join(self.dir, "m.json")
        r = self.step("--step", "b", "--cells", "3", "--inputs", "xs", "--metrics", "total",
                      env={"STEPSNAP_METRICS_FILE": metrics_file})
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(metrics_file) as f:
            self.assertAlmostEqual(json.load(f)["metrics"]["total"], sum(x ** 0.5 for x in range(4)))
        with open(os.path.join(self.marshal, "pipeline-metrics.json")) as f:
            self.assertIn("total", json.load(f))

    def test_a_failing_cell_fails_the_step_and_names_the_cell(self):
        r = self.step("--step", "c", "--cells", "4")
        self.assertEqual(r.returncode, 1)
        self.assertIn("nb.ipynb cell 4", r.stderr)
        self.assertIn("ValueError: boom", r.stderr)

    def test_a_changed_notebook_is_refused(self):
        r = self.step("--step", "a", "--cells", "2", "--sha256", "0" * 64)
        self.assertEqual(r.returncode, 2)
        self.assertIn("is not the one runner compiled", r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1)

    def test_a_value_that_cannot_be_saved_stops_the_step_in_one_line(self):
        with open(self.nb) as f:
            nb = json.load(f)
        nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [],
                            "source": "gen = (i for i in range(3))"})
        with open(self.nb, "w") as f:
            json.dump(nb, f)
        r = self.step("--step", "g", "--cells", "5", "--outputs", "gen")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot save variable 'gen' (type generator)", r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)

    def test_a_missing_input_is_one_line(self):
        r = self.step("--step", "b", "--cells", "3", "--inputs", "xs")
        self.assertEqual(r.returncode, 1)
        self.assertIn("variable 'xs' is not in the marshal folder", r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1)


if __name__ == "__main__":
    unittest.main()
