"""The package's layers stay honest: imports only go down PLAN.md's stage order, no two modules
import each other (directly or round a longer loop), and no module reaches into another's private
(`_name`) parts.

Every module is parsed, not imported, so an import hidden inside a function or under
`if TYPE_CHECKING:` counts like one at the top. A failure lists every offending import with its
file and line.
"""

from __future__ import annotations

import ast
import dataclasses
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "embaug_jax"

# Lowest first: a module may import from its own layer or a lower one. A layer names modules
# and packages (a package covers everything under it). `metrics` is the evaluate stage until
# evaluate/ replaces it.
LAYERS = (
    ("foundation", ("util", "configlib", "compiles", "distributed", "interrupt", "registry",
                    "workdir")),
    ("sources", ("sources",)),
    ("embed", ("embed",)),
    ("dataset", ("dataset",)),
    ("augment", ("augment",)),
    ("evaluate", ("evaluate", "metrics")),
    ("train", ("train",)),
    ("report", ("report",)),
    ("run", ("run",)),
    # A tool above the stages (check_augmentation): it may import any of them, none imports it.
    ("testing", ("testing",)),
    ("entry points", ("cli", "__main__", "")),  # "": the package's own __init__
)


@dataclasses.dataclass(frozen=True)
class Import:
    """One module's import of another module of the package (or of a name in it)."""

    source: str  # the importing module, e.g. "embaug_jax.run.train"
    target: str  # the imported module, e.g. "embaug_jax.train.engine"
    names: tuple[str, ...]  # the names taken from `target` (or reached as `alias.name`)
    where: str  # "embaug_jax/run/train.py:12"

    def __str__(self) -> str:
        taken = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.where}: {self.source} imports {self.target}{taken}"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `root`, by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an ImportFrom reads from, with `from . import x` resolved."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[:len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def find_imports(root: Path, package: str) -> list[Import]:
    """Every import between modules of `package`: at the top, in functions, under TYPE_CHECKING.

    `from pkg import sub` imports the submodule `pkg.sub` when there is one, else the name `sub`
    of `pkg`. A private name reached through an imported module (`engine._restore` after
    `from embaug_jax.train import engine`) counts as taken from that module.
    """
    modules = module_files(root, package)
    found = []
    for source, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        where = lambda node: f"{path.relative_to(root).as_posix()}:{node.lineno}"  # noqa: E731
        aliases: dict[str, str] = {}  # local name -> a module of the package
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        found.append(Import(source, alias.name, (), where(node)))
                        if alias.asname:
                            aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(node, source, is_package)
                if target not in modules:
                    continue
                names = []
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:
                        found.append(Import(source, sub, (), where(node)))
                        aliases[alias.asname or alias.name] = sub
                    else:
                        names.append(alias.name)
                if names:
                    found.append(Import(source, target, tuple(names), where(node)))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and _private(node.attr)):
                found.append(Import(source, aliases[node.value.id], (node.attr,), where(node)))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def layer_of(module: str, package: str = PACKAGE) -> int | None:
    """The index in LAYERS of a module, by the longest layer entry that covers it."""
    rel = module[len(package) + 1:] if module != package else ""
    best, best_len = None, -1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            covers = rel == entry or (entry and rel.startswith(entry + "."))
            if covers and len(entry) > best_len:
                best, best_len = index, len(entry)
    return best


def cycles(imports: list[Import]) -> list[list[Import]]:
    """The imports of each group of modules that import one another round a loop (Tarjan's
    strongly connected components, self-imports included)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        # Iterative, so a deep import chain cannot hit Python's recursion limit.
        work = [(node, iter(sorted(graph[node])))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[current] = min(low[current], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == current:
                            break
                    if len(group) > 1 or current in graph[current]:
                        groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [[imp for imp in imports if imp.source in group and imp.target in group]
            for group in groups]


def layer_violations(imports: list[Import], package: str = PACKAGE) -> list[str]:
    out = []
    for imp in imports:
        have, want = layer_of(imp.source, package), layer_of(imp.target, package)
        if have is not None and want is not None and want > have:
            out.append(f"{imp} - {LAYERS[have][0]} may not import from {LAYERS[want][0]}")
    return out


def private_violations(imports: list[Import]) -> list[str]:
    return [f"{imp.where}: {imp.source} takes {name} from {imp.target}"
            for imp in imports for name in imp.names
            if _private(name) and imp.source != imp.target]


def _fail_listing(title: str, lines: list[str], fix: str) -> None:
    """Fails with every offender on a line of its own (and no repr of the list after it)."""
    if lines:
        pytest.fail(f"{title} ({len(lines)}); {fix}:\n" + "\n".join(f"  {x}" for x in lines),
                    pytrace=False)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return find_imports(REPO, PACKAGE)


def test_every_module_has_a_layer():
    unplaced = [f"{path.relative_to(REPO).as_posix()}: {module}"
                for module, path in module_files(REPO, PACKAGE).items()
                if layer_of(module) is None]
    _fail_listing(
        "modules in no layer", unplaced,
        "place each in PLAN.md's layer order and in LAYERS here")


def test_no_import_cycles(imports):
    found = cycles(imports)
    lines = [f"cycle through {', '.join(sorted({i.source for i in group}))}:\n    "
             + "\n    ".join(map(str, group)) for group in found]
    _fail_listing(
        "import cycles", lines,
        "move what both modules need into the lower one (or a module below both)")


def test_imports_only_go_down_the_layers(imports):
    bad = layer_violations(imports)
    order = " < ".join(name for name, _ in LAYERS)
    _fail_listing(
        "imports from a later layer", bad,
        f"the layers are {order}; move the code to the layer that owns it, or pass what it "
        "needs in from above")


def test_no_private_name_crosses_modules(imports):
    bad = private_violations(imports)
    _fail_listing(
        "private names used from another module", bad,
        "make the name public in the module whose job it is (or move it), or keep it inside")


def test_the_checks_see_hidden_imports_cycles_and_private_names(tmp_path):
    """The checker itself, on a made-up package: a function-level import, one under
    TYPE_CHECKING, a relative import, a private name reached through a module alias."""
    pkg = tmp_path / "toy"
    (pkg / "train").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "util.py": "from toy.train import engine\n",
        "train/__init__.py": "",
        "train/engine.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from toy.report import Table
            def f():
                from toy import util
                return util._helper
            """,
        "report.py": "from .train.engine import _restore, f\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    found = find_imports(tmp_path, "toy")
    assert {(i.source, i.target, i.names, i.where) for i in found} == {
        ("toy.util", "toy.train.engine", (), "toy/util.py:1"),
        ("toy.train.engine", "toy.report", ("Table",), "toy/train/engine.py:3"),
        ("toy.train.engine", "toy.util", (), "toy/train/engine.py:5"),
        ("toy.train.engine", "toy.util", ("_helper",), "toy/train/engine.py:6"),
        ("toy.report", "toy.train.engine", ("_restore", "f"), "toy/report.py:1"),
    }
    assert [sorted({i.source for i in group}) for group in cycles(found)] == [
        ["toy.report", "toy.train.engine", "toy.util"]]
    assert sorted(private_violations(found)) == [
        "toy/report.py:1: toy.report takes _restore from toy.train.engine",
        "toy/train/engine.py:6: toy.train.engine takes _helper from toy.util"]
    bad = layer_violations(found, "toy")
    assert len(bad) == 2 and all(b.endswith("foundation may not import from train") or
                                 b.endswith("train may not import from report") for b in bad)
