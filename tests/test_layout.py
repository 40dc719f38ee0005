"""The package's shape: imports point down, never in a circle, and only the CLI knows argparse.

The checker reads the source with :mod:`ast` (nothing is imported), so it sees every import:
module level, function-local, under ``if TYPE_CHECKING:`` or ``try:``, relative or absolute, and
``importlib.import_module("cnnkit.x")`` with a literal name. Each import is resolved to the deepest
module of the package that exists: ``from cnnkit.data import builtin`` is an edge to
``cnnkit.data.builtin``, ``from cnnkit.data import Dataset`` an edge to ``cnnkit.data`` (its
``__init__``). Importing ``cnnkit.data.builtin`` is *not* counted as importing ``cnnkit.data``
as well, although Python runs that ``__init__`` first; only an import that names it counts.

The rules, from STYLE.md ("Imports point down", "Libraries never import the command line"):

* no cycles between modules, a function-local import included;
* a module imports only modules of its own layer or a lower one (``LAYERS`` below); the package
  root ``cnnkit`` (``__version__``) is importable by all;
* only ``cnnkit.cli`` (and the ``python -m cnnkit`` entry point, which runs it) imports
  ``argparse`` or ``cnnkit.cli``.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "cnnkit"

# Layer of each top-level part of the package; a submodule takes the layer of the longest entry
# that is a prefix of its name (``cnnkit.models.zoo.resnet`` -> ``cnnkit.models`` -> 3).
LAYERS: dict[str, int] = {
    "cnnkit.errors": 0, "cnnkit.registry": 0, "cnnkit.geometry": 0, "cnnkit.atomic": 0,
    "cnnkit.config": 1, "cnnkit.spec": 1,
    "cnnkit.nn": 2, "cnnkit.runs": 2,
    # the glass box's NumPy ops are as low as torch's layers (the classification task uses its loss);
    # its network (built against the declarative spec) and its trainer sit with their torch twins
    "cnnkit.reference": 2, "cnnkit.reference.network": 3, "cnnkit.reference.trainer": 5,
    "cnnkit.models": 3, "cnnkit.data": 3, "cnnkit.summary": 3,
    "cnnkit.tasks": 4, "cnnkit.inference": 4,
    "cnnkit.train": 5,
    "cnnkit.api": 6, "cnnkit.optim": 6,
    "cnnkit.explain": 7, "cnnkit.tools": 7,
    "cnnkit.cli": 8, "cnnkit.__main__": 8,
}


# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import statement, resolved: ``importer`` (a module of the package) needs ``target``."""

    importer: str
    target: str  # a module of the package, or the top-level name of an outside module ("argparse")
    path: Path  # relative to the folder above the package's source root, e.g. src/cnnkit/cli.py
    line: int
    code: str  # the statement as written, e.g. "from cnnkit.cli import main"

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def describe(self) -> str:
        return f"{self.where}: {self.importer} imports {self.target} (`{self.code}`)"


def discover_modules(src: Path, package: str) -> dict[str, Path]:
    """Map every module of ``package`` under ``src`` to its file (a package to its ``__init__.py``)."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def display_path(module: str, path: Path) -> Path:
    """The file as messages show it: from the folder above the source root (``src/cnnkit/cli.py``)."""
    return path.relative_to(path.parents[module.count(".") + (2 if path.name == "__init__.py" else 1)])


def _deepest_module(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted ``name`` that is a module of the package, if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _resolve(name: str, modules: dict[str, Path], package: str) -> str:
    """A module of the package for names inside it, else the outside module's top-level name."""
    if name == package or name.startswith(package + "."):
        return _deepest_module(name, modules) or name
    return name.split(".")[0]


def _relative_base(importer: str, is_package: bool, level: int) -> str:
    """The package that ``from <level dots> import ...`` starts from inside ``importer``."""
    parts = importer.split(".")
    if not is_package:
        parts = parts[:-1]  # a plain module's relative imports start from its package
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts)


def module_imports(module: str, path: Path, modules: dict[str, Path], package: str) -> list[Import]:
    """Every import in one file, wherever it sits in the file, resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    shown = display_path(module, path)

    def add(name: str, node: ast.AST) -> None:
        target = _resolve(name, modules, package)
        imp = Import(module, target, shown, node.lineno, ast.unparse(node).splitlines()[0])
        if target != module and imp not in found:  # naming itself is no edge; one entry per statement
            found.append(imp)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _relative_base(module, is_package, node.level)
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                # `from a.b import c` needs a.b.c if that is a module, else a.b (its __init__).
                name = source if alias.name == "*" else f"{source}.{alias.name}"
                add(name, node)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in {"import_module", "__import__"})
            )
        ):
            add(node.args[0].value, node)
    return found


def build_graph(src: Path, package: str) -> tuple[dict[str, Path], list[Import]]:
    """All modules of ``package`` and all their imports."""
    modules = discover_modules(src, package)
    imports = [imp for name, path in modules.items() for imp in module_imports(name, path, modules, package)]
    return modules, imports


def find_cycles(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    """One readable chain per group of modules that import each other in a circle."""
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in imports:
        if imp.target in modules:
            edges[imp.importer].setdefault(imp.target, imp)  # keep the first such statement

    # Tarjan's strongly connected components, iteratively (no recursion limit to hit).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    reports = []
    for group in sorted(groups):
        members = set(group)
        start = group[0]
        # Shortest way from start back to start inside the group (breadth first).
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            following = []
            for node in frontier:
                for child in sorted(edges[node]):
                    if child in members and child not in previous:
                        previous[child] = node
                        following.append(child)
            frontier = following
        backwards = []  # start's predecessor, its predecessor, ... up to the step after start
        node = previous[start]
        while node != start:
            backwards.append(node)
            node = previous[node]
        chain = [start] + backwards[::-1]  # start -> ... -> (back to) start
        steps = []
        for here, there in zip(chain, chain[1:] + [start]):
            imp = edges[here][there]
            steps.append(f"    {here}  --[{imp.where}: `{imp.code}`]-->  {there}")
        rest = sorted(members - set(chain))
        others = f" (the circle also takes in: {', '.join(rest)})" if rest else ""
        reports.append(f"cycle {' -> '.join(chain + [start])}{others}\n" + "\n".join(steps))
    return reports


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    """The layer of a module: that of the longest table entry that is it or a package above it."""
    best = None
    for prefix, layer in layers.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return None if best is None else best[1]


def find_upward_imports(
    modules: dict[str, Path], imports: list[Import], layers: dict[str, int], package: str
) -> list[str]:
    """Imports of a higher layer, and modules the layer table does not know."""
    problems = []
    for module in modules:
        if module != package and layer_of(module, layers) is None:
            problems.append(
                f"{display_path(module, modules[module])}: module {module} is in no layer; add it (or its package) "
                f"to LAYERS in tests/test_layout.py"
            )
    for imp in imports:
        if imp.target not in modules or imp.target == package:
            continue  # outside modules, and the package root, which all may import
        here, there = layer_of(imp.importer, layers), layer_of(imp.target, layers)
        if imp.importer == package:
            here = 0  # the root is imported by everyone, so it may only lean on the bottom layer
        if here is None or there is None:
            continue  # already reported as a module in no layer
        if there > here:
            problems.append(f"{imp.describe()}: upward, layer {here} -> layer {there}")
    return problems


def find_cli_imports(imports: list[Import], cli: str, allowed: set[str]) -> list[str]:
    """Imports of argparse or of the CLI package by anything that is not the CLI."""
    problems = []
    for imp in imports:
        inside_cli = imp.importer == cli or imp.importer.startswith(cli + ".")
        if inside_cli or imp.importer in allowed:
            continue
        if imp.target == "argparse":
            problems.append(f"{imp.describe()}: only {cli} parses the command line")
        elif imp.target == cli or imp.target.startswith(cli + "."):
            problems.append(f"{imp.describe()}: a library module must not import the command line")
    return problems


def _fail(title: str, problems: list[str]) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {title}:\n" + "\n".join(problems), pytrace=False)


# --------------------------------------------------------------------------------------------
# The rules, on the real package
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph():
    return build_graph(SRC, PACKAGE)


def test_the_checker_sees_the_package(graph):
    modules, imports = graph
    assert PACKAGE in modules and f"{PACKAGE}.__main__" in modules
    assert any(imp.importer == f"{PACKAGE}.__main__" for imp in imports)


def test_no_import_cycles(graph):
    _fail("import cycle(s); move the shared piece down a layer", find_cycles(*graph))


def test_imports_point_down(graph):
    modules, imports = graph
    _fail("import(s) against the layers", find_upward_imports(modules, imports, LAYERS, PACKAGE))


def test_only_the_cli_imports_argparse_or_the_cli(graph):
    _, imports = graph
    problems = find_cli_imports(imports, f"{PACKAGE}.cli", allowed={f"{PACKAGE}.__main__"})
    _fail("command-line import(s) outside the CLI", problems)


# --------------------------------------------------------------------------------------------
# The checker can fail: a made-up package with each kind of fault
# --------------------------------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_checker_finds_cycles_upward_imports_and_argparse(tmp_path):
    _write(tmp_path, {
        "toy/__init__.py": '__version__ = "1"\n',
        "toy/low.py": """\
            import os

            def helper():
                from toy.high import thing  # hidden in a function, still an edge (upward and a cycle)
                return thing
            """,
        "toy/high.py": "from toy.low import helper\nthing = 1\n",
        "toy/pkg/__init__.py": "from toy.pkg.inner import Inner\n",
        "toy/pkg/inner.py": "from . import other\nclass Inner: pass\n",
        "toy/pkg/other.py": "from toy.pkg import Inner  # explicit import of the package's __init__\n",
        "toy/fine.py": "from toy import __version__\nfrom . import low\nimport argparse\n",
        "toy/cli.py": "import argparse\nfrom toy import high\n",
        "toy/stray.py": "from toy.cli import main\n",
    })
    modules, imports = build_graph(tmp_path, "toy")
    assert set(modules) == {"toy", "toy.low", "toy.high", "toy.pkg", "toy.pkg.inner", "toy.pkg.other",
                            "toy.fine", "toy.cli", "toy.stray"}
    edges = {(i.importer, i.target) for i in imports}
    assert ("toy.low", "toy.high") in edges  # function-local import
    assert ("toy.pkg.inner", "toy.pkg.other") in edges  # relative `from . import other` -> the submodule
    assert ("toy.pkg.other", "toy.pkg") in edges  # explicit import of the package __init__
    assert ("toy.fine", "toy") in edges and ("toy.fine", "toy.low") in edges
    assert ("toy.fine", "argparse") in edges
    assert not any(i.importer == "toy.pkg.inner" and i.target == "toy.pkg" for i in imports)  # no implicit edge

    cycles = find_cycles(modules, imports)
    assert len(cycles) == 2, cycles
    low_high = next(c for c in cycles if "toy.low" in c)
    assert low_high.startswith("cycle toy.high -> toy.low -> toy.high")
    assert "low.py:4" in low_high and "`from toy.high import thing`" in low_high
    pkg = next(c for c in cycles if "toy.pkg" in c)
    assert "toy.pkg.other" in pkg and "`from toy.pkg import Inner`" in pkg

    layers = {"toy.low": 0, "toy.fine": 0, "toy.high": 1, "toy.pkg": 1, "toy.cli": 2}
    upward = find_upward_imports(modules, imports, layers, "toy")
    assert any("toy.low imports toy.high" in p and "low.py:4" in p and "layer 0 -> layer 1" in p
               for p in upward), upward
    assert any("module toy.stray is in no layer" in p and "add it" in p for p in upward), upward
    assert not any("toy.fine imports toy " in p for p in upward)  # the root is importable by all
    assert not any("toy.cli imports" in p for p in upward)  # downward is fine
    assert len(upward) == 2, upward

    cli = find_cli_imports(imports, "toy.cli", set())
    assert len(cli) == 2, cli
    assert any("toy.fine imports argparse" in p and "fine.py:3" in p and "`import argparse`" in p for p in cli)
    assert any("toy.stray imports toy.cli" in p and "stray.py:1" in p for p in cli)

    # And a clean package passes.
    clean = tmp_path / "clean"
    _write(clean, {"ok/__init__.py": "", "ok/a.py": "import os\n", "ok/b.py": "from ok import a\n"})
    modules, imports = build_graph(clean, "ok")
    assert find_cycles(modules, imports) == []
    assert find_upward_imports(modules, imports, {"ok.a": 0, "ok.b": 1}, "ok") == []
    assert find_cli_imports(imports, "ok.cli", set()) == []
