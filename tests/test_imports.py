"""The import structure of the project: no circle, no upward import, no hidden project import.

Every ``.py`` file under the four packages (dse, evaluators, accel, circuits) is read with
``ast`` -- nothing is imported, so these tests run even when the code itself does not -- and
every import in it is resolved to a project module:

- ``import a.b.c`` imports ``a.b.c``; ``from a.b import c`` imports ``a.b.c`` when that is a
  module (file or package), else ``a.b`` (``c`` is a name defined there); importing a package
  imports its ``__init__``, named by the package (``dse``, ``dse.executors``).
- Relative imports (``from . import x``, ``from ..y import z``) are resolved against the
  importing file's package.
- The parent packages Python also initialises on ``import a.b.c`` are *not* counted as
  imported: every ``from dse.x import y`` would otherwise close a circle with any
  ``dse/__init__.py`` that re-exports from ``dse.x``, which is the layout the project wants
  (a small public surface re-exported from each package's ``__init__``).
- Imports are found wherever they are: at module top level, inside ``if``/``try``/class
  bodies, inside functions and methods (at any depth), inside ``if TYPE_CHECKING:`` blocks,
  and ``importlib.import_module("literal")`` / ``__import__("literal")`` calls.

The rules (DESIGN.md, issue 26 item 5):

1. No circle between modules: no strongly connected component of more than one module in the
   graph of runtime imports. Imports inside functions count (a circle hidden in a function is
   still a circle). Imports under ``if TYPE_CHECKING:`` are exempt: they never run, so they
   cannot make a module see a half-initialised one, and annotations naming each other's types
   are legitimate.
2. The layering dse -> evaluators -> accel -> circuits: a module may import only its own
   package or lower ones. ``TYPE_CHECKING`` imports are *not* exempt: a type from a higher
   layer is still knowledge of that layer.
3. No project module imported inside a function. Function-level imports are kept for optional
   heavy third-party dependencies (ray, hls4ml, torch, sklearn, matplotlib, psycopg, ...); the
   project's own modules are imported at module top level, so circles cannot hide.
   ``TYPE_CHECKING`` imports never run and are exempt here too.

The scanner is checked against a small made-up project (so that a resolver that silently finds
nothing cannot make the real checks pass), and the real graph must have more than 100 modules
and 300 import edges before any rule is judged.
"""

from __future__ import annotations

import ast
import functools
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Each package's layer: a module may import its own package or any with a lower rank.
RANKS = {"dse": 3, "evaluators": 2, "accel": 1, "circuits": 0}

MIN_MODULES = 100
MIN_EDGES = 300


# ------------------------------------------------------------------------------- the scanner
@dataclass(frozen=True)
class Import:
    """One import of a project module, as written in one file."""

    importer: str  # the importing module, dotted
    target: str  # the imported project module, dotted (a package stands for its __init__)
    file: str  # the importing file, relative to the root, with forward slashes
    line: int
    statement: str  # the source text of the import (its first line)
    function: str | None  # the enclosing function's qualified name; None at module level
    type_only: bool  # under `if TYPE_CHECKING:`
    resolved: bool  # False: the dotted name is not a module of the project nor a name in one

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def describe(self) -> str:
        notes = []
        if self.function:
            notes.append(f"in {self.function}()")
        if self.type_only:
            notes.append("under TYPE_CHECKING")
        note = f" [{', '.join(notes)}]" if notes else ""
        return f"{self.where}: {self.statement}{note}"


@dataclass(frozen=True)
class Project:
    modules: dict[str, str]  # dotted name -> file, relative to the root
    imports: tuple[Import, ...]

    def edges(self, *, runtime_only: bool) -> dict[tuple[str, str], list[Import]]:
        """(importer, target) -> the import lines that make that edge; self-imports left out."""
        edges: dict[tuple[str, str], list[Import]] = defaultdict(list)
        for imp in self.imports:
            if imp.importer != imp.target and not (runtime_only and imp.type_only):
                edges[imp.importer, imp.target].append(imp)
        return edges


def find_modules(root: Path, packages) -> dict[str, str]:
    """Every module of the packages, found by walking their folders."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if "__pycache__" in rel.parts:
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = rel.as_posix()
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Finder(ast.NodeVisitor):
    """Collects, for every import statement and every `importlib.import_module` /
    `__import__` call with a literal name: (node, [(dotted name, relative level, imported
    names)], the enclosing function's qualified name or None, whether under TYPE_CHECKING)."""

    def __init__(self):
        self.found: list[tuple[ast.AST, list[tuple[str, int, list[str]]], str | None, bool]] = []
        self._scope: list[str] = []  # qualified-name parts of enclosing classes and functions
        self._functions = 0
        self._type_only = 0

    def _here(self):
        return (".".join(self._scope) if self._functions else None), self._type_only > 0

    # the parts of a def that run when the def runs (decorators, defaults, annotations) stay
    # at the enclosing level; only the body is "inside the function"
    def _visit_function(self, node):
        for expr in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        self._scope.append(node.name)
        self._functions += 1
        for stmt in node.body:
            self.visit(stmt)
        self._functions -= 1
        self._scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_function

    def visit_Lambda(self, node):
        for expr in [*node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        self._scope.append("<lambda>")
        self._functions += 1
        self.visit(node.body)
        self._functions -= 1
        self._scope.pop()

    def visit_ClassDef(self, node):  # a class body runs at import time: module level
        for expr in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(expr)
        self._scope.append(node.name)
        for stmt in node.body:
            self.visit(stmt)
        self._scope.pop()

    def visit_If(self, node):
        self.visit(node.test)
        if _is_type_checking(node.test):
            self._type_only += 1
            for stmt in node.body:
                self.visit(stmt)
            self._type_only -= 1
        else:
            for stmt in node.body:
                self.visit(stmt)
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node):
        self.found.append((node, [(alias.name, 0, []) for alias in node.names], *self._here()))

    def visit_ImportFrom(self, node):
        names = [alias.name for alias in node.names]
        self.found.append((node, [(node.module or "", node.level, names)], *self._here()))

    def visit_Call(self, node):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if (name in ("import_module", "__import__") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            self.found.append((node, [(node.args[0].value, 0, [])], *self._here()))
        self.generic_visit(node)


def _package_of(module: str, file: str) -> str:
    return module if file.endswith("__init__.py") else module.rpartition(".")[0]


def _resolve(dotted: str, modules) -> tuple[str, bool]:
    """The project module a dotted import name stands for: itself when it is a module, else
    its longest prefix that is (then the name is not a module: resolved=False)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name, end == len(parts)
    return parts[0], False


def scan(root: Path, packages=tuple(RANKS)) -> Project:
    """Every import of a project module in every file of the packages under root."""
    modules = find_modules(root, packages)
    imports = []
    for module, file in modules.items():
        source = (root / file).read_text(encoding="utf-8")
        tree = ast.parse(source, filename=file)
        lines = source.splitlines()
        finder = _Finder()
        finder.visit(tree)
        for node, specs, function, type_only in finder.found:
            statement = lines[node.lineno - 1].strip()
            for dotted, level, names in specs:
                if level:  # relative: against this file's package, one level up per extra dot
                    base = _package_of(module, file).split(".")
                    if level > len(base):  # beyond the top-level package: an ImportError
                        imports.append(Import(module, base[0], file, node.lineno, statement,
                                              function, type_only, resolved=False))
                        continue
                    base = base[: len(base) - (level - 1)]
                    dotted = ".".join([*base, dotted] if dotted else base)
                elif dotted.split(".")[0] not in packages:
                    continue  # standard library or third party
                targets = []
                if not names or names == ["*"]:
                    targets.append(_resolve(dotted, modules))
                else:  # from X import a, b: X.a when that is a module, else a name in X
                    for name in names:
                        sub = f"{dotted}.{name}"
                        targets.append((sub, True) if sub in modules else _resolve(dotted, modules))
                for target, resolved in dict.fromkeys(targets):
                    imports.append(Import(module, target, file, node.lineno, statement,
                                          function, type_only, resolved))
    return Project(modules, tuple(imports))


# ----------------------------------------------------------------------------------- the rules
def circles(project: Project) -> list[str]:
    """One block per circle (strongly connected modules): a shortest circle through them, then
    every runtime import line between its modules, each on its own line."""
    edges = project.edges(runtime_only=True)
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    blocks = []
    for component in _strongly_connected(sorted(project.modules), graph):
        if len(component) < 2:
            continue
        members = set(component)
        start = min(members)
        loop = _shortest_cycle(start, graph, members)
        lines = [f"circle of {len(members)} modules: {' -> '.join(loop)}"]
        for (a, b), imps in sorted(edges.items()):
            if a in members and b in members:
                lines += [f"    {a} -> {b}  {imp.describe()}" for imp in imps]
        blocks.append("\n".join(lines))
    return blocks


def _strongly_connected(nodes, graph) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_cycle(start, graph, members) -> list[str]:
    came_from = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # cannot happen in an SCC of size > 1


def upward_imports(project: Project) -> list[str]:
    out = []
    for imp in project.imports:
        mine, theirs = imp.importer.split(".")[0], imp.target.split(".")[0]
        if RANKS[theirs] > RANKS[mine]:
            allowed = ", ".join(p for p in RANKS if RANKS[p] <= RANKS[mine])
            out.append(f"{imp.describe()}  ({mine} imports {imp.target}; "
                       f"{mine} may import only {allowed})")
    return out


def function_level_imports(project: Project) -> list[Import]:
    """One per import statement (a statement importing two modules is one offence)."""
    found = {}
    for imp in project.imports:
        if imp.function and not imp.type_only:
            found.setdefault((imp.file, imp.line), imp)
    return list(found.values())


# ------------------------------------------------------------------------------------ the tests
@functools.lru_cache(maxsize=1)
def _project() -> Project:
    return scan(REPO)


def _real_project() -> Project:
    """The project's graph, after checking it is large enough for the rules to mean anything."""
    project = _project()
    edges = project.edges(runtime_only=False)
    per_package = Counter(name.split(".")[0] for name in project.modules)
    assert len(project.modules) > MIN_MODULES, (
        f"only {len(project.modules)} modules found under {REPO}: {dict(per_package)}")
    assert len(edges) > MIN_EDGES, f"only {len(edges)} import edges between project modules"
    assert set(per_package) == set(RANKS), f"a package has no modules: {dict(per_package)}"
    return project


def _fail(title: str, offenders: list[str]) -> None:
    pytest.fail(f"{title}:\n" + "\n".join(offenders), pytrace=False)


def test_no_import_circle_between_modules():
    found = circles(_real_project())
    if found:
        _fail(f"{len(found)} import circle(s) between modules (imports inside functions count; "
              "under `if TYPE_CHECKING:` they do not)", found)


def test_imports_follow_the_layering_dse_evaluators_accel_circuits():
    found = upward_imports(_real_project())
    if found:
        _fail(f"{len(found)} import(s) against the layering dse -> evaluators -> accel -> "
              "circuits (a module imports only its own package or lower ones; TYPE_CHECKING "
              "imports included)", found)


def test_project_modules_are_imported_at_module_top_level():
    found = function_level_imports(_real_project())
    if found:
        per_file = Counter(imp.file for imp in found)
        summary = [f"  {count:4d}  {file}" for file, count in sorted(per_file.items())]
        _fail(f"{len(found)} import(s) of project modules inside functions (only optional heavy "
              "third-party dependencies may be imported inside a function)",
              [imp.describe() for imp in found] + ["per file:", *summary])


def test_every_project_import_names_a_module_or_a_name_in_one():
    """An import the scanner cannot place (e.g. `import dse.gone`) would be an edge silently
    missing from the rules above; such an import is broken anyway."""
    found = [imp for imp in _real_project().imports if not imp.resolved]
    if found:
        _fail(f"{len(found)} import(s) naming a project module that does not exist",
              [imp.describe() for imp in found])


# ------------------------------------------------------------- the scanner on a made-up project
FAKE = {
    "dse/__init__.py": "from dse.study import load_study\n",
    "dse/study.py": (
        "from __future__ import annotations\n"
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "import evaluators.score as score\n"
        "from . import space\n"  # relative, a module
        "if TYPE_CHECKING:\n"
        "    from dse.report import Report\n"  # type-only: no circle
        "def load_study(path):\n"
        "    import numpy\n"  # third party: fine
        "    from dse.loop import run\n"  # project import in a function (and a circle)
        "    return run\n"
    ),
    "dse/space.py": "X = 1\n",
    "dse/loop.py": "from dse import study\nfrom dse import load_study\n",
    "dse/report.py": "from dse.study import load_study\n",
    "dse/sub/__init__.py": "",
    "dse/sub/deep.py": (
        "from ..space import X\n"  # two dots: dse.space
        "from .. import report\n"  # dse.report
        "from . import *\n"  # dse.sub
        "class C:\n"
        "    import dse.space\n"  # class body: module level
        "    def method(self):\n"
        "        def inner():\n"
        "            from ..report import Report\n"  # two dots inside a nested function
        "        import importlib\n"
        "        return importlib.import_module('circuits.gates')\n"
    ),
    "evaluators/__init__.py": "",
    "evaluators/score.py": "import accel\nfrom dse.space import X\n",  # upward
    "accel/__init__.py": "from circuits import gates\nif TYPE_CHECKING:\n    import dse\n",
    "circuits/__init__.py": "",
    "circuits/gates.py": "",
}


def test_the_scanner_finds_every_kind_of_import(tmp_path):
    for name, text in FAKE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    project = scan(tmp_path)
    got = {(i.importer, i.target, i.line, i.function, i.type_only) for i in project.imports}
    assert got == {
        ("dse", "dse.study", 1, None, False),
        ("dse.study", "evaluators.score", 4, None, False),
        ("dse.study", "dse.space", 5, None, False),
        ("dse.study", "dse.report", 7, None, True),
        ("dse.study", "dse.loop", 10, "load_study", False),
        ("dse.loop", "dse.study", 1, None, False),
        ("dse.loop", "dse", 2, None, False),
        ("dse.report", "dse.study", 1, None, False),
        ("dse.sub.deep", "dse.space", 1, None, False),
        ("dse.sub.deep", "dse.report", 2, None, False),
        ("dse.sub.deep", "dse.sub", 3, None, False),
        ("dse.sub.deep", "dse.space", 5, None, False),
        ("dse.sub.deep", "dse.report", 8, "C.method.inner", False),
        ("dse.sub.deep", "circuits.gates", 10, "C.method", False),
        ("evaluators.score", "accel", 1, None, False),
        ("evaluators.score", "dse.space", 2, None, False),
        ("accel", "circuits.gates", 1, None, False),
        ("accel", "dse", 3, None, True),
    }
    assert all(i.resolved for i in project.imports)

    found = circles(project)
    assert len(found) == 1 and found[0].startswith(
        "circle of 3 modules: dse -> dse.study -> dse.loop -> dse"), found
    assert "dse/study.py:10: from dse.loop import run [in load_study()]" in found[0]
    assert "dse.report" not in found[0]  # its way back is under TYPE_CHECKING

    upward = upward_imports(project)
    assert [line.split(":")[:2] for line in upward] == [
        ["evaluators/score.py", "2"], ["accel/__init__.py", "3"]], upward

    inside = function_level_imports(project)
    assert [i.where for i in inside] == [
        "dse/study.py:10", "dse/sub/deep.py:8", "dse/sub/deep.py:10"]

    (tmp_path / "dse/gone.py").write_text("import dse.missing.module\nfrom ... import x\n")
    gone = [i for i in scan(tmp_path).imports if i.importer == "dse.gone"]
    assert [(i.target, i.line, i.resolved) for i in gone] == [("dse", 1, False), ("dse", 2, False)]
