"""The built-in plugins' layout: one package per kind in data-path order, one entry point each,
light registration, no import circles, no oversized module."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from moduseg_core.kinds import HOOKS, KINDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "plugins" / "moduseg_builtins"
MAX_LINES = 400


def _folders() -> list[str]:
    """The kind folders in data-path order: each hook ``register_<folder>``."""
    return [HOOKS[kind].removeprefix("register_") for kind in KINDS]


def test_one_entry_point_per_kind_in_data_path_order():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["moduseg"]
    assert list(declared.items()) == [(f, f"moduseg_builtins.{f}") for f in _folders()]
    for folder, kind in zip(_folders(), KINDS):
        init = PACKAGE / folder / "__init__.py"
        assert f"def {HOOKS[kind]}(" in init.read_text(), f"{init} must register the {kind} components"


def test_registering_every_builtin_imports_nothing_heavy():
    code = (
        "import moduseg_core as ms\n"
        "from moduseg_core.plugins import heavy_modules_loaded\n"
        "assert ms.list_components()\n"
        "print(heavy_modules_loaded())\n"
    )
    env = {"PATH": "", "MODUSEG_LOAD_PLUGINS": ",".join(_folders())}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """module → the package modules it imports, lazy imports inside functions included
    (``if TYPE_CHECKING:`` blocks left out)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        skipped = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in ast.walk(node)
        }
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                subs = [f"{base}.{alias.name}" for alias in node.names]
                # `from . import submodule` needs only the submodule
                targets = subs if all(s in files for s in subs) else [base, *subs]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = _import_graph()
    assert len(graph) > 30 and sum(map(len, graph.values())) > 50, "the import graph looks empty"
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_the_limit():
    modules = [*PACKAGE.rglob("*.py"), *(ROOT / "moduseg_core").rglob("*.py")]  # the plugins and the core
    long = {str(p.relative_to(ROOT)): n for p in modules if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by backend or family: {long}"
