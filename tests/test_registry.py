"""Names are data: registry.yaml, the `moduseg` entry points and the docs' plugin directory agree."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import tomllib
import yaml

import moduseg_core as ms

ROOT = Path(__file__).resolve().parents[1]


def _catalogue() -> list[dict]:
    return yaml.safe_load((ROOT / "registry.yaml").read_text())["components"]


def test_registry_and_docs_are_in_sync():
    out = subprocess.run(
        [sys.executable, "scripts/sync_registry.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_builtin_entry_point_is_catalogued_and_installed():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["moduseg"]
    installed = {ep.name: ep.value for ep in entry_points(group="moduseg")}
    for name, module in declared.items():
        assert installed.get(name) == module, f"entry point {name} is not installed; pip install -e ."
    assert {e["entry_point"] for e in _catalogue()} == set(declared)
    for entry in _catalogue():
        assert entry["module"].startswith(declared[entry["entry_point"]]), entry


def test_catalogue_matches_the_live_registry():
    live = {(s.kind, s.name) for s in ms.list_components() if s.module.startswith("moduseg_builtins")}
    assert {(e["kind"], e["name"]) for e in _catalogue()} == live
    for entry in _catalogue():
        assert entry["description"], f"{entry['kind']} {entry['name']} has no description"
        assert entry["kind"] in ms.KINDS


def test_docs_directory_lists_every_catalogued_component():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for entry in _catalogue():
        assert f"| {entry['kind']} | `{entry['name']}` |" in docs
