"""The code's layout: the built-in plugins one package per kind in data-path order, one entry point each, light
registration; the core in its layers (contract ← files ← pipeline); no import circles in either, lazy imports
included; no oversized module."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from moduseg_core.contract.kinds import HOOKS, KINDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "plugins" / "moduseg_builtins"
CORE = ROOT / "moduseg_core"
MAX_LINES = 400


def _folders() -> list[str]:
    """The kind folders in data-path order: each hook ``register_<folder>``."""
    return [HOOKS[kind].removeprefix("register_") for kind in KINDS]


def test_one_entry_point_per_kind_in_data_path_order():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["moduseg"]
    assert list(declared.items()) == [(f, f"moduseg_builtins.{f}") for f in _folders()]
    for folder, kind in zip(_folders(), KINDS, strict=True):
        init = PACKAGE / folder / "__init__.py"
        assert f"def {HOOKS[kind]}(" in init.read_text(), f"{init} must register the {kind} components"


def test_registering_every_builtin_imports_nothing_heavy():
    code = (
        "import moduseg_core as ms\n"
        "from moduseg_core.contract.plugins import heavy_modules_loaded\n"
        "assert ms.list_components()\n"
        "print(heavy_modules_loaded())\n"
    )
    env = {"PATH": "", "MODUSEG_LOAD_PLUGINS": ",".join(_folders())}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module → the package's modules it imports, lazy imports inside functions included
    (``if TYPE_CHECKING:`` blocks left out)."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
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


@pytest.mark.parametrize("package", [PACKAGE, CORE], ids=["plugins", "core"])
def test_no_import_circles(package):
    graph = _import_graph(package)
    assert len(graph) > 30 and sum(map(len, graph.values())) > 50, "the import graph looks empty"
    assert _cycles(graph) == []


def test_the_import_graph_sees_lazy_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    from pkg import c\nfrom . import a\n")
    (pkg / "c.py").write_text("")
    assert _import_graph(pkg) == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": set()}
    assert _cycles(_import_graph(pkg)) == [["pkg.a", "pkg.b"]]


LAYERS = ("contract", "files", "pipeline")  # each may import the ones before it only


def test_the_core_keeps_its_layers():
    """contract imports no other part of the core; files the contract only; pipeline both, never a job
    (executors, cache, ablate, bench, cli, prepare); and the core's top level holds packages only."""
    allowed = {
        "contract": {"contract"},
        "files": {"contract", "files", "method", "report_html"},
        "pipeline": {"contract", "files", "pipeline", "method", "report_html", "executors"},
    }
    crossings = []
    for module, imports in _import_graph(CORE).items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in allowed:
            continue
        crossings += [f"{module} -> {t}" for t in imports if t.split(".")[1] not in allowed[parts[1]] | {"_moved"}]
    assert crossings == []
    loose = sorted(p.name for p in CORE.glob("*.py") if p.name not in {"__init__.py", "__main__.py", "_moved.py"})
    assert loose == [], f"put these in a layer package: {loose}"


def test_old_import_paths_are_the_same_modules():
    """A module moved into a layer still imports from its 0.1 path for one release: the same module object, a
    DeprecationWarning naming the new path."""
    code = (
        "import moduseg_core as ms, moduseg_core.types as old, moduseg_core.contract.types as new\n"
        "from moduseg_core.protocols.encoder import FeatureEncoder\n"
        "from moduseg_core.contract.protocols import encoder\n"
        "print(old is new, new.__spec__.name, FeatureEncoder is encoder.FeatureEncoder, ms.plugins.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-c", code], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "moduseg_core.contract.types", "True", "moduseg_core.contract.plugins"]
    assert "moduseg_core.types moved to moduseg_core.contract.types" in out.stderr
    assert "moduseg_core.protocols moved to moduseg_core.contract.protocols" in out.stderr

    import moduseg_core
    from moduseg_core import _moved

    assert _moved.new_name("moduseg_core.protocols.encoder") == "moduseg_core.contract.protocols.encoder"
    assert _moved.new_name("moduseg_core.method.nms") is None
    with pytest.raises(AttributeError, match="no_such_thing"):
        moduseg_core.no_such_thing  # noqa: B018 (the attribute access is what raises)
    assert all(importlib.util.find_spec(new) for new in _moved.MOVED.values())


def test_no_module_over_the_limit():
    modules = [*PACKAGE.rglob("*.py"), *CORE.rglob("*.py")]  # the plugins and the core
    long = {str(p.relative_to(ROOT)): n for p in modules if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by backend or family: {long}"
