"""House rules of the library code that a reader of one module cannot see, checked on the source itself.

- No private name (``_x``) crosses a module boundary: a helper that several modules use is public in the
  module that owns it (``probes.threads``, ``evidence.stats``, ...).
- No import circle between modules, counting imports inside functions (a lazy import hides a circle
  from Python, not from the reader).
- Every import between packages is one that the table of ``docs/architecture.md`` ("Layout and the
  direction of imports") allows, and every entry of that table is used: the table is the one statement
  of the import rules, and this file reads it (its package list too).
- No function is 60 lines or longer without a comment saying why (functions of files other branches are
  still changing are listed in ``LONG_FUNCTIONS_ALLOWED`` until they are shortened there).

Library code: the packages below, without ``benchmarks/perf`` (measurement scripts) and without tests.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def import_rules(text: str | None = None) -> dict[str, set[str]]:
    """Package or module -> the packages and modules of the project it may import: the rows
    ``| `source` | `a`, `b` |`` of docs/architecture.md's import table."""
    text = ARCHITECTURE.read_text(encoding="utf-8") if text is None else text
    rules = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 2:
            rules[cells[0].strip("`")] = set(re.findall(r"`([\w.]+)`", cells[1]))
    return rules


PACKAGES = tuple(name for name in import_rules() if "." not in name)
EXCLUDED = (ROOT / "benchmarks" / "perf",)
LONG_FUNCTION_LINES = 60
# A function this long may stay when a comment in its first lines says why it must be (``# long: ...``).
LONG_REASON_MARK = "# long:"
# (file, function) -> lines when listed; files other branches change now. Each entry goes when its function
# is shortened; a function not listed here that reaches LONG_FUNCTION_LINES fails the test.
LONG_FUNCTIONS_ALLOWED: set[tuple[str, str]] = set()


def library_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if not any(path.is_relative_to(excluded) for excluded in EXCLUDED):
                files.append(path)
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_module(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module name an ``ImportFrom`` reads from (relative imports resolved against ``path``)."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_crossings(path: Path) -> list[str]:
    """``file:line name`` of every private name that ``path`` takes from another module of the project:
    ``from m import _x`` and ``m._x`` where ``m`` is a project module or something imported from one."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, project_names = [], set()
    where = path.relative_to(ROOT)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _imported_module(node, path)
            if source.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{where}:{node.lineno} from {source} import {alias.name}")
                project_names.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    project_names.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):  # package.module._x
                base = base.value
            if isinstance(base, ast.Name) and base.id in project_names:
                found.append(f"{where}:{node.lineno} {ast.unparse(node)}")
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its body (``from p import m`` counts as module
    ``p.m`` when that is a module, else as ``p``)."""
    modules = {module_name(path): path for path in library_files()}

    def known(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _imported_module(node, path)
                edges.update(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else known(source) for alias in node.names)
        graph[name] = edges - {name, ""}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.get(module, ()):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                circles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


def _covers(entry: str, module: str) -> bool:
    """``entry`` names ``module`` or a package holding it (``train.mllm`` covers ``train.mllm``, not ``train.mllm_layouts``)."""
    return module == entry or module.startswith(entry + ".")


def forbidden_imports(graph: dict[str, set[str]], rules: dict[str, set[str]]) -> list[str]:
    """``module -> imported`` for every import between two packages that no row of ``rules`` covering the
    importing module allows."""
    found = []
    for module, imported in sorted(graph.items()):
        allowed = set().union(*(entries for source, entries in rules.items() if _covers(source, module)))
        found += [f"{module} -> {target}" for target in sorted(imported)
                  if target.split(".")[0] != module.split(".")[0] and not any(_covers(entry, target) for entry in allowed)]
    return found


def unused_rules(graph: dict[str, set[str]], rules: dict[str, set[str]]) -> list[str]:
    """``source: entry`` for every entry of ``rules`` that no import of ``source``'s modules uses."""
    return [f"{source}: {entry}" for source, entries in sorted(rules.items()) for entry in sorted(entries)
            if not any(_covers(source, module) and any(_covers(entry, target) for target in imported) for module, imported in graph.items())]


def long_functions(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of the functions of ``path`` that are at least
    ``LONG_FUNCTION_LINES`` long (``def`` line to last line; decorators not counted)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                length = child.end_lineno - child.lineno + 1
                if length >= LONG_FUNCTION_LINES:
                    found.append((name, child.lineno, length))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _explained(path: Path, line: int) -> bool:
    """True when a ``# long: why`` comment sits in the function's first lines (signature and docstring)."""
    lines = path.read_text(encoding="utf-8").splitlines()[line - 1 : line + 30]
    return any(LONG_REASON_MARK in text for text in lines)


def test_the_checks_see_the_library():
    files = library_files()
    assert len(files) > 50 and all(f.suffix == ".py" for f in files)
    assert not any("perf" in f.relative_to(ROOT).parts for f in files)


def test_no_private_name_crosses_a_module_boundary():
    crossings = [found for path in library_files() for found in private_crossings(path)]
    assert not crossings, "private names taken from other modules (make them public in the module that owns them):\n" + "\n".join(crossings)


def test_the_private_name_check_finds_what_it_looks_for(tmp_path, monkeypatch):
    package = tmp_path / "probes"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from probes.linear import _hidden, public\nfrom .threads import _local\nimport probes.knn as knn\nx = knn._private_helper\ny = public._attr\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = private_crossings(package / "a.py")
    assert [entry.split(" ", 1)[1] for entry in found] == [
        "from probes.linear import _hidden", "from probes.threads import _local", "knn._private_helper", "public._attr"]


def test_no_import_circle():
    graph = import_graph()
    assert "encoders.loader" in graph["benchmarks.loading"]  # the graph sees the imports
    assert not import_circles(graph), f"modules that import each other: {import_circles(graph)}"


def test_every_package_has_a_row_in_the_import_table():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    assert set(PACKAGES) == packages, "add the package to the table of docs/architecture.md (Layout and the direction of imports)"
    assert {source.split(".")[0] for source in import_rules()} == packages


def test_every_import_between_packages_is_one_the_architecture_doc_allows():
    graph, rules = import_graph(), import_rules()
    forbidden = forbidden_imports(graph, rules)
    assert not forbidden, "imports that docs/architecture.md's table does not allow (move the code, or add the arrow there with its reason):\n" + "\n".join(forbidden)
    unused = unused_rules(graph, rules)
    assert not unused, "entries of docs/architecture.md's import table that no import uses (remove them):\n" + "\n".join(unused)


def test_the_import_rule_check_finds_what_it_looks_for():
    rules = import_rules("| `train` | `common`, `imagesets` |\n| `benchmarks` | `train.mllm` |\n| `benchmarks.demo` | `train.demo` |\n| `common` | (nothing) |\n")
    assert rules == {"train": {"common", "imagesets"}, "benchmarks": {"train.mllm"}, "benchmarks.demo": {"train.demo"}, "common": set()}
    graph = {"train.data": {"imagesets", "benchmarks.plan", "train.config"}, "benchmarks.demo": {"train.demo", "train.mllm"},
             "benchmarks.plan": {"train.demo", "train.mllm_layouts"}, "common.options": {"common.errors"}}
    assert forbidden_imports(graph, rules) == ["benchmarks.plan -> train.demo", "benchmarks.plan -> train.mllm_layouts", "train.data -> benchmarks.plan"]
    assert unused_rules(graph, rules) == ["train: common"]


def test_the_circle_check_finds_circles():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("path", library_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_new_long_function(path: Path):
    where = str(path.relative_to(ROOT))
    long = [f"{where}:{line} {name} is {length} lines" for name, line, length in long_functions(path)
            if (where, name) not in LONG_FUNCTIONS_ALLOWED and not _explained(path, line)]
    assert not long, f"functions of {LONG_FUNCTION_LINES} lines or more: shorten them or say why in a '{LONG_REASON_MARK} ...' comment:\n" + "\n".join(long)


def test_the_allow_list_holds_only_long_functions():
    """An entry whose function was shortened (or renamed) goes from LONG_FUNCTIONS_ALLOWED."""
    present = {(str(path.relative_to(ROOT)), name) for path in library_files() for name, _, _ in long_functions(path)}
    assert LONG_FUNCTIONS_ALLOWED <= present, f"no longer long, remove from the allow-list: {sorted(LONG_FUNCTIONS_ALLOWED - present)}"
