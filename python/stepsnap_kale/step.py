"""One step of a Kale notebook pipeline, as one python3 process.

runner compiles a notebook into steps whose command is

    python3 -m stepsnap_kale.step --notebook NB --sha256 HEX --step NAME
        --marshal DIR [--prelude I,J] [--parameters I] [--cells I,J]
        [--inputs A,B] [--outputs C] [--metrics M] [--param NAME=VALUE]...

and runs it with the workspace clone mounted where the notebook lives. The
code comes from the notebook in the clone (so a restored run runs exactly
the notebook of its snapshot), in Kale's order: the imports and functions
cells, the pipeline parameters (with --param overrides, typed as the cell's
literals), the step's inputs loaded from the marshal folder, the step's own
cells, then its outputs saved there and its metrics recorded.
"""

import argparse
import hashlib
import json
import os
import sys
import traceback
import types

from stepsnap_kale import analysis, marshal_dir

EXIT_STEP_FAILED = 1
EXIT_SETUP = 2


def indices(text):
    return [int(i) for i in text.split(",") if i != ""] if text else []


def names(text):
    return [n for n in text.split(",") if n] if text else []


def say(step, message):
    print("stepsnap step %s: %s" % (step, message), file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python3 -m stepsnap_kale.step")
    p.add_argument("--notebook", required=True)
    p.add_argument("--sha256", default="")
    p.add_argument("--step", required=True)
    p.add_argument("--marshal", required=True)
    p.add_argument("--prelude", default="")
    p.add_argument("--parameters", default="")
    p.add_argument("--cells", default="")
    p.add_argument("--inputs", default="")
    p.add_argument("--outputs", default="")
    p.add_argument("--metrics", default="")
    p.add_argument("--param", action="append", default=[])
    return p.parse_args(argv)


def run_cell(notebook_name, index, source, namespace):
    code = compile(analysis.code_of(source), "%s cell %d" % (notebook_name, index), "exec")
    exec(code, namespace)


def record_metrics(args, namespace):
    values = {}
    for m in names(args.metrics):
        v = namespace.get(m)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            try:
                v = float(v)
            except (TypeError, ValueError):
                v = str(v)
        values[m] = v
    if not values:
        return
    # In the marshal folder, so the step's post-snapshot holds them; a name
    # with a '-' can never be a variable's file.
    path = os.path.join(args.marshal, "pipeline-metrics.json")
    recorded = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    recorded.update(values)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(recorded, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
    # And where runner reads them (a host file outside the step's volumes).
    target = os.environ.get("STEPSNAP_METRICS_FILE")
    if target:
        with open(target, "w", encoding="utf-8") as f:
            json.dump({"step": args.step, "metrics": values}, f)
    for m, v in values.items():
        print("stepsnap step %s: metric %s = %s" % (args.step, m, v), flush=True)


def main(argv):
    args = parse_args(argv)
    step = args.step
    try:
        with open(args.notebook, "rb") as f:
            raw = f.read()
    except OSError as e:
        say(step, "cannot read the notebook %s: %s; is the workspace mounted?" % (args.notebook, e.strerror))
        return EXIT_SETUP
    if args.sha256 and hashlib.sha256(raw).hexdigest() != args.sha256:
        say(
            step,
            "the notebook %s in the workspace is not the one runner compiled (sha256 differs); "
            "save it on the workspace volume and run again" % args.notebook,
        )
        return EXIT_SETUP
    cells = json.loads(raw.decode("utf-8"))["cells"]

    def source(i):
        s = cells[i]["source"]
        return "".join(s) if isinstance(s, list) else s

    notebook_name = os.path.basename(args.notebook)
    # The step's code runs as __main__, so that what it defines pickles by
    # reference the way it would in the notebook's kernel.
    main_module = types.ModuleType("__main__")
    main_module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main_module
    namespace = main_module.__dict__

    try:
        for i in indices(args.prelude) + indices(args.parameters):
            run_cell(notebook_name, i, source(i), namespace)
        overrides = dict(p.split("=", 1) for p in args.param)
        if overrides:
            parameters = analysis.parameters_of(
                [{"cell": i, "source": source(i)} for i in indices(args.parameters)]
            )
            for name, value in analysis.apply_overrides(parameters, overrides):
                namespace[name] = value
    except ValueError as e:
        say(step, str(e))
        return EXIT_SETUP
    except Exception:
        traceback.print_exc()
        return EXIT_STEP_FAILED

    try:
        for name in names(args.inputs):
            namespace[name] = marshal_dir.load(args.marshal, name)
    except marshal_dir.MarshalError as e:
        say(step, str(e))
        return EXIT_STEP_FAILED

    try:
        for i in indices(args.cells):
            run_cell(notebook_name, i, source(i), namespace)
    except SystemExit as e:
        if e.code not in (None, 0):
            return e.code if isinstance(e.code, int) else EXIT_STEP_FAILED
    except BaseException:
        traceback.print_exc()
        return EXIT_STEP_FAILED

    try:
        for name in names(args.outputs):
            if name not in namespace:
                raise marshal_dir.MarshalError(
                    "variable %r is not defined at the end of the step, yet a later step uses it"
                    % name
                )
            marshal_dir.save(args.marshal, name, namespace[name])
        record_metrics(args, namespace)
    except marshal_dir.MarshalError as e:
        say(step, str(e))
        return EXIT_STEP_FAILED
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
