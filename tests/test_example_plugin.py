"""The third-party example plugin (docs/examples/moduseg-grid), installed as a user would install it."""

from __future__ import annotations

import ast
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

import numpy as np
import pytest

import moduseg_core
import moduseg_core.contract.plugins as plugins
from moduseg_core import ModusegError, get_component
from moduseg_core.files.io import read_image

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "moduseg-grid"
NOT_INSTALLED = (
    "the example plugin moduseg-grid is not installed in this environment; `make test` installs it "
    "(or run: pip install -e docs/examples/moduseg-grid --no-deps)"
)


@pytest.fixture(autouse=True)
def _only_the_example_plugin(only_plugins):
    # Discovery still goes through entry points; this just keeps other plugins out of the way.
    only_plugins("grid")


def installed_version() -> str:
    """The installed moduseg-grid version; fails (never skips) when it is not installed."""
    try:
        installed = version("moduseg-grid")
    except PackageNotFoundError:
        pytest.fail(NOT_INSTALLED)
    found = [ep for ep in entry_points(group="moduseg") if ep.name == "grid"]
    if not found:
        pytest.fail(NOT_INSTALLED + " (the distribution is there but has no `grid` entry point: reinstall it)")
    assert found[0].value == "moduseg_grid"
    assert found[0].dist is not None and found[0].dist.name == "moduseg-grid"
    return installed


@pytest.fixture
def image(coco_mini) -> np.ndarray:
    first = (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    return read_image(coco_mini / "JPEGImages" / f"{first}.jpg")


def test_discovered_through_its_entry_point():
    grid_version = installed_version()
    specs = {spec.name: spec for spec in moduseg_core.list_components("proposer")}
    assert "grid" in specs, NOT_INSTALLED
    spec = specs["grid"]
    assert spec.plugin == f"moduseg-grid {grid_version}" == "moduseg-grid 0.1.0"
    assert spec.module == "moduseg_grid"
    assert plugins.loaded_plugins()["grid"] == "moduseg-grid 0.1.0"
    assert spec.options.model_fields["cells"].default == [2, 4, 8]


def test_proposes_a_partition_per_scale_on_a_real_image(image):
    installed_version()
    proposer = get_component("proposer", "grid")
    height, width = image.shape[:2]
    proposals = proposer.propose(image, image_id="x")
    assert isinstance(proposals, moduseg_core.Proposals)
    assert proposals.masks.shape == (4 + 16 + 64, height, width)
    assert proposals.masks.dtype == np.bool_
    assert proposals.scores.dtype == np.float32 and np.all(proposals.scores == 1.0)
    start = 0
    for n in (2, 4, 8):
        scale = proposals.masks[start : start + n * n]
        start += n * n
        coverage = scale.sum(axis=0)
        assert np.all(coverage == 1), f"the {n}×{n} tiles must cover every pixel exactly once"
        areas = scale.sum(axis=(1, 2))
        assert areas.min() > 0
        # regular tiles: sides differ by at most one pixel
        assert areas.max() - areas.min() <= (height // n + 1) + (width // n + 1)
        for mask in scale:  # each tile is one axis-aligned rectangle
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            assert mask.sum() == len(rows) * len(cols)
            assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)


def test_options(image):
    installed_version()
    assert len(get_component("proposer", "grid", cells=[3]).propose(image)) == 9
    tiny = get_component("proposer", "grid", cells=[4]).propose(np.zeros((2, 3, 3), np.uint8))
    assert len(tiny) == 6 and np.all(tiny.masks.sum(axis=0) == 1)  # empty tiles are skipped
    with pytest.raises(ModusegError, match=r"option cells\.0=.*invalid"):
        get_component("proposer", "grid", cells=[0])
    with pytest.raises(ModusegError, match="has no option 'cell'; did you mean 'cells'"):
        get_component("proposer", "grid", cell=[2])


def test_written_against_the_public_api_only():
    source = (EXAMPLE / "moduseg_grid" / "__init__.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("moduseg"):
            assert node.module == "moduseg_core", f"example imports from {node.module}"
            assert {alias.name for alias in node.names} <= set(moduseg_core.__all__)
        if isinstance(node, ast.Import):
            assert not any(alias.name.startswith("moduseg") for alias in node.names)


def test_readme_documents_every_hook_and_the_register_signature():
    readme = (EXAMPLE / "README.md").read_text()
    hooks = [name for name in vars(moduseg_core.contract.hookspecs) if name.startswith("register_")]
    assert len(hooks) == len(moduseg_core.KINDS)
    missing = [hook for hook in hooks if f"`{hook}`" not in readme]
    assert not missing, f"README.md does not document {missing}"
    for word in ("extra", "requires", "weights", "oracle", "summary", "options"):
        assert f"{word}=" in readme
