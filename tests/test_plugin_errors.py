"""A component that fails inside one of its methods is reported in one line naming the component, its plugin and
the method (exit code 1, the traceback under MODUSEG_DEBUG=1), with no staging folder or empty output left; the
core creates the folder it hands to an index's ``save()``, as docs/plugins.md promises.

The end-to-end tests install ``tests/plugins/moduseg-shelf`` (a bank index written from docs/plugins.md alone) with
pip, as a user installs a plugin, into a folder of their own that the ``moduseg`` subprocesses put on their path."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from moduseg_core.contract import plugins
from moduseg_core.contract.hookspecs import hookimpl
from moduseg_core.contract.plugins import failed_component, get_component
from moduseg_core.contract.types import SearchResult

ROOT = Path(__file__).resolve().parents[1]
SHELF = ROOT / "tests" / "plugins" / "moduseg-shelf"
PRESET = ROOT / "moduseg_core" / "presets" / "coco-mini.yaml"
MODUSEG = Path(sys.executable).with_name("moduseg")


# -- which component failed (the core, with a component registered by hand) ------------------------


class _Brittle:
    """An index whose search fails in a helper it calls, so the report must name the public method."""

    def __init__(self, options):
        pass

    def add(self, vectors, labels):
        pass

    def search(self, queries, k) -> SearchResult:
        return self._rank(queries)

    def _rank(self, queries):
        raise ZeroDivisionError("no neighbours to rank")

    def save(self, directory):
        pass

    def load(self, directory):
        pass

    def __len__(self):
        return 0


class _BrittlePlugin:
    @hookimpl
    def register_indexes(self, register):
        register("brittle", _Brittle, summary="fails in search")


@pytest.fixture
def brittle(only_plugins):
    only_plugins("")
    plugins.register_plugin(_BrittlePlugin(), "moduseg-brittle")
    yield get_component("index", "brittle")
    plugins.unregister_plugin("moduseg-brittle")


def _raised(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 (the exception is what is examined)
        return exc
    raise AssertionError("expected the call to raise")


def test_the_failing_component_its_plugin_and_public_method_are_named(brittle):
    exc = _raised(lambda: brittle.search(np.zeros((1, 4), np.float32), 1))
    line = failed_component(exc)
    assert line == (
        "index 'brittle' (plugin moduseg-brittle) failed in search(): ZeroDivisionError: no neighbours to rank"
    )


def test_a_failure_re_raised_from_a_worker_thread_is_still_attributed(brittle):
    def job():
        with ThreadPoolExecutor(1) as pool:
            pool.submit(brittle.search, np.zeros((1, 4), np.float32), 1).result()

    assert "index 'brittle'" in (failed_component(_raised(job)) or "")


def test_a_failure_wrapped_by_the_caller_is_traced_through_its_cause(brittle):
    def wrapped():
        try:
            brittle.search(np.zeros((1, 4), np.float32), 1)
        except ZeroDivisionError as exc:
            raise RuntimeError("the batch failed") from exc

    assert (failed_component(_raised(wrapped)) or "").startswith("index 'brittle' (plugin moduseg-brittle) failed in")


def test_a_failure_outside_any_component_is_not_blamed_on_one(brittle):
    assert failed_component(_raised(lambda: 1 / 0)) is None
    lock = threading.Lock()  # an object that is no component, with a method that raises
    assert failed_component(_raised(lambda: lock.release())) is None


# -- a third-party plugin installed with pip ---------------------------------------------------------


@pytest.fixture(scope="module")
def shelf(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site") / "site-packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(SHELF)],
        check=True, capture_output=True, text=True,
    )
    assert (target / "moduseg_shelf-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def moduseg(shelf: Path, *args, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(shelf), "MODUSEG_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    env.pop("MODUSEG_DEBUG", None)
    if debug:
        env["MODUSEG_DEBUG"] = "1"
    return subprocess.run([str(MODUSEG), *map(str, args)], capture_output=True, text=True, env=env)


def leftovers(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if ".bank_save" in p.name or ".tmp" in p.name)


@pytest.mark.slow
def test_a_plugin_index_saves_loads_and_reports_its_failures_in_one_line(shelf, coco_mini, tmp_path):
    bank_args = ["build-bank", "-c", PRESET, "--set", f"dataset.root={coco_mini}", "--set", "bank_limit=3",
                 "--index", "shelf"]
    image = coco_mini / "JPEGImages" / f"{(coco_mini / 'ImageSets/Segmentation/val.txt').read_text().split()[0]}.jpg"

    # written from the docs: save() writes into the folder it is given, which the core created
    done = moduseg(shelf, *bank_args, "--out", tmp_path / "bank")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "bank" / "index").iterdir()) == ["shelf_labels.npy", "shelf_vectors.npy"]
    predicted = moduseg(shelf, "predict", image, "--bank", tmp_path / "bank", "--out", tmp_path / "pred")
    assert predicted.returncode == 0, predicted.stderr
    assert list((tmp_path / "pred" / "predictions").glob("*.png"))

    # save() fails after the whole bank was built: one line, exit 1, no staging folder
    failed = moduseg(shelf, *bank_args, "--set", "index.fail_in=save", "--out", tmp_path / "bank2")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        "Error: index 'shelf' (plugin moduseg-shelf 0.1.0) failed in save(): "
        "RuntimeError: the shelf collapsed in save (fail_in='save')"
    )
    assert "Traceback" not in failed.stderr and leftovers(tmp_path / "bank2") == []
    assert not (tmp_path / "bank2" / "manifest.json").exists()

    # search() fails on the first image: one line, and the output folder it began is gone again
    args = ["predict", image, "--bank", tmp_path / "bank", "--index", "shelf", "--set", "index.fail_in=search",
            "--out", tmp_path / "pred2"]
    failed = moduseg(shelf, *args)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines() == [
        "Error: index 'shelf' (plugin moduseg-shelf 0.1.0) failed in search(): "
        "RuntimeError: the shelf collapsed in search (fail_in='search')"
    ]
    assert not (tmp_path / "pred2").exists()

    # MODUSEG_DEBUG=1: the whole traceback, through the plugin's own code
    debug = moduseg(shelf, *args, debug=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "moduseg_shelf" in debug.stderr
