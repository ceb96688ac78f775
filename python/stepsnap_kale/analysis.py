"""Variable flow between the steps of a Kale notebook, by static analysis.

runner (runner/pipeline/notebook_compile.cpp) parses the cell tags and asks
this module, through `python3 -m stepsnap_kale.analysis REQUEST.json`, which
names each step needs from its ancestors (inputs) and which it must hand on
(outputs). Only Python's own `ast` module is used: no pip, no pyflakes.

The rules (docs/notebooks.md has them for users):
- a step's free names are the names its code reads before binding them, in
  execution order, including the globals read by functions it calls that
  were defined upstream (in the functions cells or an earlier step);
- free names that are builtins, pipeline parameters or defined by the
  imports/functions cells are not inputs: every step runs those cells itself;
- every other free name must be defined by an ancestor step; the nearest
  such ancestor (the latest in notebook order) outputs it;
- a name a step deletes (`del x`) and does not bind again is not defined by
  that step.
"""

import ast
import builtins
import hashlib
import json
import sys

BUILTINS = frozenset(dir(builtins)) | {"__name__", "__file__", "__doc__", "__builtins__"}


class CellError(Exception):
    """An error in one cell: runner prints it with the cell's index and tag."""

    def __init__(self, cell, line, message):
        super().__init__(message)
        self.cell = cell
        self.line = line
        self.message = message


def code_of(source):
    """A cell's source as Python: IPython magics (`%...`) and shell escapes
    (`!...`) become comments, so the line numbers stay those of the cell."""
    lines = []
    for line in source.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith("%") or stripped.startswith("!"):
            line = line[: len(line) - len(stripped)] + "# " + stripped
        lines.append(line)
    return "\n".join(lines)


def parse_cell(cell, source):
    try:
        return ast.parse(code_of(source), filename="cell %d" % cell)
    except SyntaxError as e:
        raise CellError(cell, e.lineno or 0, "Python syntax error: %s" % e.msg) from None


class Scope:
    """Names bound so far in one scope, and what it reads before binding."""

    def __init__(self, parent=None, kind="module"):
        self.parent = parent
        self.kind = kind
        self.bound = set()
        self.declared_global = set()


class FlowVisitor(ast.NodeVisitor):
    """Walks module-level code in execution order.

    free: name -> (cell, line) of the first read of a name not bound before.
    bound: names bound at module level at the end.
    functions: function name -> globals its body reads (module-level names it
    does not bind itself), so that calling it pulls them in.
    calls: module-level names read (a read of a function name counts as a
    call: passing the function on can call it too).
    """

    def __init__(self, known_functions):
        self.module = Scope()
        self.scope = self.module
        self.free = {}
        self.deleted = set()
        self.known_functions = known_functions  # name -> set of globals
        self.functions = {}
        self.rebound = set()
        self.cell = 0
        # Inside a function body: the reads that resolve to module globals,
        # collected here instead of counting as reads now.
        self.deferred = None

    # -- reads and binds ---------------------------------------------------
    def read(self, name, node):
        scope = self.scope
        while scope is not self.module:
            if name in scope.declared_global:
                break
            if scope.kind == "function" and name in scope.locals:
                return
            if scope.kind != "function" and name in scope.bound:
                return  # a comprehension's variable, or a class body's name
            scope = scope.parent
        if self.deferred is not None:
            # Read when the function runs, not now.
            self.deferred.add(name)
            return
        self.read_global(name, node)

    def read_global(self, name, node):
        if name in self.module.bound:
            self.pull_function_globals(name, node, set())
            return
        if name not in self.free:
            self.free[name] = (self.cell, getattr(node, "lineno", 0))
        self.pull_function_globals(name, node, set())

    def pull_function_globals(self, name, node, seen):
        """A read of a function defined upstream also reads its globals."""
        if name in seen:
            return
        seen.add(name)
        if name in self.functions:
            globs = self.functions[name]
        elif name in self.rebound:
            globs = ()  # bound here to something that is not that function
        else:
            globs = self.known_functions.get(name)
        for g in sorted(globs or ()):
            if g not in self.module.bound and g not in self.free:
                self.free[g] = (self.cell, getattr(node, "lineno", 0))
            self.pull_function_globals(g, node, seen)

    def bind(self, name):
        scope = self.scope
        if name in scope.declared_global:
            scope = self.module
        scope.bound.add(name)
        if scope is self.module:
            self.deleted.discard(name)
            self.rebound.add(name)
            # A rebinding of a function name is no longer that function.
            self.functions.pop(name, None)

    # -- statements and expressions ---------------------------------------
    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load):
            self.read(node.id, node)
        elif isinstance(node.ctx, ast.Store):
            self.bind(node.id)
        else:  # Del: deleting a name reads it first
            self.read(node.id, node)
            scope = self.module if node.id in self.scope.declared_global else self.scope
            scope.bound.discard(node.id)
            if scope is self.module:
                self.deleted.add(node.id)

    def visit_AugAssign(self, node):
        if isinstance(node.target, ast.Name):
            self.visit(node.value)
            self.read(node.target.id, node.target)
            self.bind(node.target.id)
        else:
            self.visit(node.value)
            self.visit(node.target)

    def visit_Assign(self, node):
        # The value is evaluated before the targets are bound.
        self.visit(node.value)
        for t in node.targets:
            self.visit(t)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)
        if self.scope is self.module:
            self.visit(node.annotation)
        if node.value is not None or not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_NamedExpr(self, node):
        self.visit(node.value)
        # The walrus binds in the nearest function or module scope, never in
        # a comprehension's.
        scope = self.scope
        while scope.kind == "comprehension":
            scope = scope.parent
        saved, self.scope = self.scope, scope
        self.bind(node.target.id)
        self.scope = saved

    def visit_Import(self, node):
        for alias in node.names:
            self.bind(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node):
        for alias in node.names:
            if alias.name != "*":
                self.bind(alias.asname or alias.name)

    def visit_Global(self, node):
        if self.scope is not self.module:
            self.scope.declared_global.update(node.names)

    def visit_Nonlocal(self, node):
        pass

    def visit_ExceptHandler(self, node):
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.bind(node.name)
        for s in node.body:
            self.visit(s)

    def visit_MatchAs(self, node):
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self.bind(node.name)

    def visit_MatchStar(self, node):
        if node.name:
            self.bind(node.name)

    def visit_MatchMapping(self, node):
        self.generic_visit(node)
        if node.rest:
            self.bind(node.rest)

    def visit_For(self, node):
        self.visit(node.iter)
        self.visit(node.target)
        for s in node.body + node.orelse:
            self.visit(s)

    visit_AsyncFor = visit_For

    # -- scopes ------------------------------------------------------------
    def function_scope(self, node, args, body, name=None):
        """Defaults and decorators are read now; the body when called."""
        for d in getattr(node, "decorator_list", []):
            self.visit(d)
        for d in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(d)
        if self.scope is self.module:
            for a in all_args(args):
                if a.annotation is not None:
                    self.visit(a.annotation)
        if name is not None:
            self.bind(name)
        scope = Scope(self.scope, "function")
        scope.locals = locals_of(args, body)
        scope.bound = set(scope.locals)
        outer_deferred = self.deferred
        self.deferred = set()
        saved, self.scope = self.scope, scope
        for s in body if isinstance(body, list) else [body]:
            self.visit(s)
        self.scope = saved
        reads, self.deferred = self.deferred, outer_deferred
        if outer_deferred is not None:
            outer_deferred.update(reads)
        elif name is not None:
            self.functions[name] = reads - BUILTINS
        else:  # a lambda at module level: its globals are read when called
            for r in sorted(reads):
                if r not in self.module.bound and r not in self.free:
                    self.free[r] = (self.cell, getattr(node, "lineno", 0))

    def visit_FunctionDef(self, node):
        self.function_scope(node, node.args, node.body, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        self.function_scope(node, node.args, node.body)

    def visit_ClassDef(self, node):
        for d in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(d)
        # The class body runs now, in its own scope; methods behave like
        # functions (class-level names are not visible inside them).
        scope = Scope(self.scope, "class")
        saved, self.scope = self.scope, scope
        for s in node.body:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.scope = saved
                outer = self.deferred
                self.deferred = set() if outer is None else outer
                self.function_scope(s, s.args, s.body)
                reads = self.deferred
                self.deferred = outer
                if outer is None:
                    methods = self.functions.setdefault(node.name, set())
                    methods.update(reads - BUILTINS)
                self.scope = scope
            else:
                self.visit(s)
        self.scope = saved
        globs = self.functions.get(node.name, set())
        self.bind(node.name)
        if self.scope is self.module:
            self.functions[node.name] = globs

    def comprehension(self, node, parts):
        generators = node.generators
        # The first iterable is evaluated in the enclosing scope.
        self.visit(generators[0].iter)
        scope = Scope(self.scope, "comprehension")
        saved, self.scope = self.scope, scope
        for i, g in enumerate(generators):
            if i:
                self.visit(g.iter)
            self.visit(g.target)
            for cond in g.ifs:
                self.visit(cond)
        for p in parts:
            self.visit(p)
        self.scope = saved

    def visit_ListComp(self, node):
        self.comprehension(node, [node.elt])

    visit_SetComp = visit_ListComp
    visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node):
        self.comprehension(node, [node.key, node.value])


def all_args(args):
    out = list(args.posonlyargs) + list(args.args) + list(args.kwonlyargs)
    if args.vararg:
        out.append(args.vararg)
    if args.kwarg:
        out.append(args.kwarg)
    return out


def locals_of(args, body):
    """The names a function binds: its parameters and every name it stores
    into (minus those it declares global), as Python's compiler decides."""
    names = {a.arg for a in all_args(args)}
    declared_global = set()
    stack = list(body) if isinstance(body, list) else [body]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            declared_global.update(node.names)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            for d in getattr(node, "decorator_list", []):
                stack.append(d)
            continue  # their bodies are their own scopes
        elif isinstance(node, ast.Lambda):
            continue
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            # Only a walrus inside escapes a comprehension.
            for sub in ast.walk(node):
                if isinstance(sub, ast.NamedExpr):
                    names.add(sub.target.id)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return names - declared_global


def analyse_cells(cells, known_functions, already_bound=()):
    """Runs FlowVisitor over cells (each {"cell", "source"}) in order."""
    v = FlowVisitor(known_functions)
    v.module.bound.update(already_bound)
    for c in cells:
        tree = parse_cell(c["cell"], c["source"])
        v.cell = c["cell"]
        for stmt in tree.body:
            v.visit(stmt)
    return v


# -- pipeline parameters and metrics ----------------------------------------
PARAMETER_TYPES = {bool: "bool", int: "int", float: "float", str: "str"}


def literal_of(node):
    """The value of an int, float, str or bool literal (with a sign), else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = literal_of(node.operand)
        if inner is None or isinstance(inner, (bool, str)):
            return None
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Constant) and type(node.value) in PARAMETER_TYPES:
        return node.value
    return None


def parameters_of(cells):
    """[(name, value)] from the pipeline-parameters cells: each statement is
    one `NAME = LITERAL` (int, float, str or bool), as Kale requires."""
    out = []
    seen = set()
    for c in cells:
        tree = parse_cell(c["cell"], c["source"])
        for stmt in tree.body:
            ok = (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and literal_of(stmt.value) is not None
            )
            if not ok:
                raise CellError(
                    c["cell"],
                    stmt.lineno,
                    "a pipeline parameter is one assignment NAME = LITERAL "
                    "(int, float, str or bool); move other code to another cell",
                )
            name = stmt.targets[0].id
            if name in seen:
                raise CellError(c["cell"], stmt.lineno, "parameter %r is set twice" % name)
            seen.add(name)
            out.append((name, literal_of(stmt.value)))
    return out


def typed_override(name, default, text):
    """--param NAME=TEXT as the type of the cell's literal."""
    kind = PARAMETER_TYPES[type(default)]
    try:
        if kind == "bool":
            lowered = text.lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError
        if kind == "int":
            return int(text, 0)
        if kind == "float":
            return float(text)
        return text
    except ValueError:
        raise ValueError(
            "--param %s=%s: %s is a pipeline parameter of type %s (%r in the notebook); give %s %s"
            % (name, text, name, kind, default, "an" if kind == "int" else "a", kind)
        ) from None


def apply_overrides(parameters, overrides):
    """parameters with --param values, typed; an unknown name is an error."""
    values = dict(parameters)
    for name, text in overrides.items():
        if name not in values:
            raise ValueError(
                "--param %s: the notebook has no such pipeline parameter (it has: %s)"
                % (name, ", ".join(values) or "none")
            )
        values[name] = typed_override(name, values[name], text)
    return [(n, values[n]) for n, _ in parameters]


def metrics_of(cells):
    """The variables of the pipeline-metrics cells: `print(NAME)` lines only."""
    out = []
    for c in cells:
        tree = parse_cell(c["cell"], c["source"])
        for stmt in tree.body:
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            ok = (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "print"
                and len(call.args) == 1
                and not call.keywords
                and isinstance(call.args[0], ast.Name)
            )
            if not ok:
                raise CellError(
                    c["cell"], stmt.lineno, "a pipeline-metrics cell holds only print(NAME) lines"
                )
            if call.args[0].id not in out:
                out.append(call.args[0].id)
    return out


# -- the whole notebook -------------------------------------------------------
def ancestors_of(steps):
    """name -> set of ancestor names (prev edges, transitively)."""
    prev = {s["name"]: list(s.get("prev", [])) for s in steps}
    memo = {}

    def walk(name, seen):
        if name in memo:
            return memo[name]
        out = set()
        for p in prev.get(name, []):
            if p in seen:
                continue
            out.add(p)
            out |= walk(p, seen | {p})
        memo[name] = out
        return out

    return {s["name"]: walk(s["name"], {s["name"]}) for s in steps}


def analyse(request):
    """request: {"prelude": [cells], "parameters": [cells], "metrics": [cells],
    "steps": [{"name", "prev": [...], "cells": [cells]}], "overrides": {}}
    where a cell is {"cell": index, "source": text}. Returns the answer
    runner reads (see main)."""
    prelude = analyse_cells(request.get("prelude", []), {})
    prelude_names = set(prelude.module.bound)
    known_functions = dict(prelude.functions)
    parameters = parameters_of(request.get("parameters", []))
    try:
        parameters = apply_overrides(parameters, request.get("overrides", {}))
    except ValueError as e:
        return {"ok": False, "cell": -1, "line": 0, "message": str(e)}
    parameter_names = {n for n, _ in parameters}
    metric_names = metrics_of(request.get("metrics", []))

    steps = request.get("steps", [])
    ancestors = ancestors_of(steps)
    order = {s["name"]: i for i, s in enumerate(steps)}
    defines = {}
    functions = dict(known_functions)
    answer = []
    # Steps in notebook order: an ancestor always comes first (prev: names
    # an earlier block), so its function definitions are known.
    for s in steps:
        names_before = prelude_names | parameter_names
        v = analyse_cells(s["cells"], functions, names_before)
        functions.update(v.functions)
        defines[s["name"]] = (set(v.module.bound) - names_before) | (
            set(v.module.bound) & set(v.functions)
        )
        defines[s["name"]] -= v.deleted
        inputs = {}
        for name, (cell, line) in v.free.items():
            if name in BUILTINS or name in names_before:
                continue
            sources = [a for a in ancestors[s["name"]] if name in defines.get(a, ())]
            if not sources:
                raise CellError(
                    cell,
                    line,
                    "step %s uses %r, which no earlier step it depends on (prev:), nor the "
                    "imports, functions or pipeline-parameters cells, defines; define it "
                    "there or add a prev: tag" % (s["name"], name),
                )
            inputs[name] = max(sources, key=lambda a: order[a])
        answer.append({"name": s["name"], "inputs": sorted(inputs), "from": inputs})

    outputs = {s["name"]: set() for s in steps}
    for a in answer:
        for name, source in a.pop("from").items():
            outputs[source].add(name)
    # Each metric belongs to the last step (in notebook order) that defines it.
    metrics = {s["name"]: [] for s in steps}
    for m in metric_names:
        owners = [s["name"] for s in steps if m in defines[s["name"]]]
        if not owners:
            cell = request["metrics"][0]["cell"] if request.get("metrics") else -1
            return {
                "ok": False,
                "cell": cell,
                "line": 0,
                "message": "pipeline metric %r is defined by no step; print a variable a step sets"
                % m,
            }
        metrics[owners[-1]].append(m)
    for a in answer:
        a["outputs"] = sorted(outputs[a["name"]])
        a["metrics"] = metrics[a["name"]]
    return {
        "ok": True,
        "parameters": [
            {"name": n, "type": PARAMETER_TYPES[type(v)], "value": v} for n, v in parameters
        ],
        "steps": answer,
    }


def main(argv):
    if len(argv) != 2:
        print("usage: python3 -m stepsnap_kale.analysis REQUEST.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        request = json.load(f)
    try:
        result = analyse(request)
    except CellError as e:
        result = {"ok": False, "cell": e.cell, "line": e.line, "message": e.message}
    if result.get("ok") and request.get("notebook"):
        # Each step checks that the notebook it runs is the one analysed.
        with open(request["notebook"], "rb") as f:
            result["sha256"] = hashlib.sha256(f.read()).hexdigest()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
