"""Reproducing the paper (docs/paper.md): its presets, and what stopped a user following the docs.

Each of the nine problems of issue 26 has a test here, named after it. EntitySeg's CropFormer and
detectron2 are not on PyPI: the import rules are checked on a package laid out as CropFormer's is
(its dataset registration importing mmcv, its deformable-attention module refusing to import
without the compiled op, its layer falling back when the op raises); the real CropFormer runs in
the slow test at the end, through scripts/verify_paper_components.py, where it is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from moduseg_core import ModusegError
from moduseg_core.contract.config import apply_overrides, load_config
from moduseg_core.contract.options import parse_options
from moduseg_core.contract.plugins import build_options, get_spec

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "moduseg_core" / "presets"
METHOD = ROOT.parent / "shared" / "METHOD.md"


@pytest.fixture(autouse=True)
def _env(only_plugins):
    only_plugins("datasets,labelers,proposers,purifiers,encoders,aggregators,indexes")


# -- the presets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["paper-voc", "paper-coco"])
def test_paper_presets_are_the_method_and_the_release(name):
    cfg = load_config(PRESETS / f"{name}.yaml")
    method = METHOD.read_text()
    # every number of shared/METHOD.md that the run uses
    assert (
        "3×3 square, 20 iterations" in method
        and build_options("purifier", "erode", cfg.purifier.options).iterations == 20
    )
    assert "fewer than **300**" in method and cfg.method.min_region_area == 300 and cfg.method.min_mask_area == 300
    assert "floor(0.25·n)" in method and cfg.method.filter_ratio == 0.25
    assert "k = 25" in method and cfg.method.top_k == 25
    assert "> 0.4" in method and cfg.method.nms_iou == 0.4
    assert "score ≥ 0.6" in method
    assert (cfg.labeler.name, cfg.proposer.name, cfg.encoder.name) == ("corrclip", "entityseg", "radio")
    assert (cfg.purifier.name, cfg.aggregator.name, cfg.index.name) == ("erode", "soft", "exact")
    proposer = build_options("proposer", "entityseg", cfg.proposer.options)
    assert proposer.score_threshold == 0.6 and proposer.config_file.endswith("mask2former_hornet_3x.yaml")
    encoder = build_options("encoder", "radio", cfg.encoder.options)
    assert encoder.model == "nvidia/C-RADIOv4-SO400M" and encoder.resize is None and list(encoder.layers) == [-1]
    labeler = build_options("labeler", "corrclip", cfg.labeler.options)
    assert re.search(r"crop (\d+), stride (\d+)", method).groups() == (str(labeler.crop), str(labeler.stride))
    assert f"logit scale {labeler.logit_scale:g}" in method and labeler.prob_threshold == 0.0
    assert (
        labeler.model == "ViT-B-16"
        and labeler.pretrained == "metaclip_fullcc"
        and labeler.dino == "facebook/dino-vitb8"
    )
    assert labeler.min_score == 0.5 and labeler.proposer == "entityseg"
    assert labeler.classes == cfg.dataset.options["classes"]
    # every option the preset sets is a real option (no typo silently ignored) and each line says where it is from
    text = (PRESETS / f"{name}.yaml").read_text()
    for line in text.splitlines():
        if re.match(r"\s+\w+: \S", line) and "name:" not in line:
            assert "#" in line, f"{name}.yaml: {line.strip()!r} does not say where its value comes from"


def test_problem_8_release_precisions_in_the_presets():
    for name in ("paper-voc", "paper-coco"):
        cfg = load_config(PRESETS / f"{name}.yaml")
        assert build_options("proposer", "entityseg", cfg.proposer.options).dtype == "float16"
        labeler = build_options("labeler", "corrclip", cfg.labeler.options)
        assert labeler.dtype == "float16" and labeler.proposer_options["dtype"] == "float16"
        inner = build_options("proposer", "entityseg", labeler.proposer_options)
        assert inner.dtype == "float16" and inner.score_threshold == 0.5
        assert build_options("encoder", "radio", cfg.encoder.options).dtype == "float32"  # the release: no autocast


def test_problem_9_the_labeler_works_at_the_photos_own_size():
    default = build_options("labeler", "corrclip", {})
    assert default.short_side == 336  # the option's default resizes ...
    for name in ("paper-voc", "paper-coco"):
        labeler = build_options("labeler", "corrclip", load_config(PRESETS / f"{name}.yaml").labeler.options)
        assert labeler.short_side is None  # ... the release does not
    docs = (ROOT / "docs" / "labelers.md").read_text()
    assert "short_side: null" in docs and "paper-voc.yaml" in docs


# -- entityseg -----------------------------------------------------------------------------------------


def test_problem_3_opts_take_numbers():
    cfg = apply_overrides(load_config(PRESETS / "paper-voc.yaml"), sets=["proposer.opts=[INPUT.MIN_SIZE_TEST, 800]"])
    options = build_options("proposer", "entityseg", cfg.proposer.options)
    assert options.opts == ["INPUT.MIN_SIZE_TEST", "800"]
    spec = get_spec("proposer", "entityseg")
    assert parse_options("proposer", "entityseg", spec.options, {"opts": ["A.B", 0.5, "C", True]}).opts == [
        "A.B",
        "0.5",
        "C",
        "True",
    ]
    with pytest.raises(ModusegError, match="KEY VALUE pairs"):
        parse_options("proposer", "entityseg", spec.options, {"opts": ["INPUT.MIN_SIZE_TEST"]})


def test_problem_4_the_labelers_proposer_takes_the_runs_entityseg_paths(tmp_path):
    base = load_config(PRESETS / "paper-voc.yaml")
    cfg = apply_overrides(base, sets=[f"proposer.cropformer_root={tmp_path}", "proposer.weights=w.pth"])
    inner = cfg.labeler.options["proposer_options"]
    assert inner["cropformer_root"] == str(tmp_path) and inner["weights"] == "w.pth"
    assert inner["score_threshold"] == 0.5 and inner["dtype"] == "float16"  # its own values stay
    # a value the labeler sets itself wins; a run whose proposer is another one passes nothing
    own = apply_overrides(base, sets=["proposer.weights=w.pth", "labeler.proposer_options={weights: mine.pth}"])
    assert own.labeler.options["proposer_options"]["weights"] == "mine.pth"
    other = apply_overrides(base, choices={"proposer": "slic"})
    assert "cropformer_root" not in other.labeler.options["proposer_options"]


def cropformer_like(root: Path, *, extra_import: str = "") -> Path:
    """A package laid out as CropFormer's imports are (no model: the import rules only)."""
    package = root / "CropFormer" / "mask2former"
    (package / "data").mkdir(parents=True)
    (root / "CropFormer" / "configs").mkdir()
    (package / "__init__.py").write_text(f"from . import data\nfrom .attention import attend\n{extra_import}\n")
    (package / "data" / "__init__.py").write_text(
        "import mmcv\n\ndef load(path):\n    return mmcv.list_from_file(path)\n"
    )
    (package / "attention.py").write_text(
        "try:\n    import MultiScaleDeformableAttention as MSDA\n"
        "except ModuleNotFoundError as e:\n    raise ModuleNotFoundError('Please compile "
        "MultiScaleDeformableAttention')\n\n"
        "def attend(x):\n    try:\n        return MSDA.ms_deform_attn_forward(x)\n    except:  # noqa: E722\n"
        "        return ('fallback', x)\n"
    )
    return root / "CropFormer"


@pytest.fixture
def fresh_imports():
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("mask2former", "mmcv", "MultiScaleDeformableAttention"):
            del sys.modules[name]


@pytest.mark.skipif(importlib.util.find_spec("mmcv") is not None, reason="mmcv is installed here")
def test_problems_1_and_2_cropformer_imports_without_mmcv_and_the_compiled_op(tmp_path, fresh_imports, caplog):
    from moduseg_builtins.proposers import _entityseg_impl as impl

    root = cropformer_like(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text("a b\nc d\n")
    impl._SAID.clear()
    with caplog.at_level(logging.WARNING, logger="moduseg.proposer.entityseg"):
        package = impl.import_cropformer(root)
        impl.import_cropformer(root)
    assert package.data.load(listing) == ["a b", "c d"]  # what CropFormer asks mmcv for
    assert package.attend(3) == ("fallback", 3)  # CropFormer's own PyTorch fallback runs
    assert "mmcv" not in sys.modules and "MultiScaleDeformableAttention" not in sys.modules  # nothing left behind
    said = [r.message for r in caplog.records if "deformable-attention" in r.message]
    assert len(said) == 1 and "PyTorch fallback" in said[0]  # said once


def test_cropformer_missing_modules_name_their_pip_package(tmp_path, fresh_imports):
    from moduseg_builtins.proposers import _entityseg_impl as impl

    root = cropformer_like(tmp_path, extra_import="import moduseg_absent_dependency")
    with pytest.raises(ModusegError) as info:
        impl.import_cropformer(root)
    message = str(info.value)
    assert "'moduseg_absent_dependency'" in message and "pip install moduseg_absent_dependency" in message
    assert "cropformer_root" not in message and "\n" not in message  # no misleading hint
    assert impl.PIP_NAMES["mmcv"] == "mmcv-lite"


def test_problem_4_config_and_weights_found_without_paths(tmp_path, monkeypatch, fresh_imports):
    from moduseg_builtins.proposers import _entityseg_setup as setup
    from moduseg_builtins.proposers.entityseg import DEFAULT_CONFIG, WEIGHTS_FILE

    root = cropformer_like(tmp_path)
    (root / DEFAULT_CONFIG).parent.mkdir(parents=True)
    (root / DEFAULT_CONFIG).write_text("MODEL: {}\n")
    monkeypatch.syspath_prepend(str(root))  # CropFormer importable (e.g. a .pth file in site-packages)
    assert setup.find_root(None) == root
    options = build_options("proposer", "entityseg", {})
    assert setup.find_config(options, root) == root / DEFAULT_CONFIG
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(ModusegError, match="hf download qqlu1992/Adobe_EntitySeg"):
        setup.find_weights(options)
    cached = cache / "datasets--qqlu1992--Adobe_EntitySeg" / "snapshots" / "0" / WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert setup.find_weights(options) == cached


def test_problem_6_checkpoints_load_as_safely_as_they_can(tmp_path):
    torch = pytest.importorskip("torch")
    from moduseg_builtins.proposers._entityseg_impl import load_checkpoint

    state = {"w": torch.arange(4.0)}
    plain, numpy_file, objects = tmp_path / "plain.pth", tmp_path / "numpy.pth", tmp_path / "objects.pth"
    torch.save({"model": state}, plain)
    torch.save({"model": state, "iteration": np.int64(9), "mean": np.arange(3.0)}, numpy_file)
    torch.save({"model": state, "args": argparse.Namespace(lr=0.1)}, objects)
    assert torch.equal(load_checkpoint(plain)["model"]["w"], state["w"])
    loaded = load_checkpoint(numpy_file)  # numpy data: still weights_only
    assert loaded["iteration"] == 9 and np.array_equal(loaded["mean"], np.arange(3.0))
    with pytest.raises(ModusegError) as info:
        load_checkpoint(objects)
    message = str(info.value)
    assert "argparse.Namespace" in message and "trust_weights=true" in message and "\n" not in message
    assert load_checkpoint(objects, trusted=True)["args"].lr == 0.1
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ModusegError, match="cannot be read as a torch checkpoint"):
        load_checkpoint(broken)


def test_problem_5_the_iopath_conflict_is_documented():
    docs = (ROOT / "docs" / "paper.md").read_text()
    assert "iopath" in docs and "0.1.10" in docs and "sam2" in docs


def test_problem_7_radio_loads_silently(tmp_path, capfd):
    pytest.importorskip("transformers")
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import encoder_checkpoints as ec
    finally:
        sys.path.pop(0)
    from moduseg_core import get_component

    folder = tmp_path / "radio"
    ec.save_radio_hf(folder)
    capfd.readouterr()
    get_component("encoder", "radio", model=str(folder), layers=[-1], device="cpu")
    err = capfd.readouterr().err
    assert "Loading" not in err and "%|" not in err


# -- the verification, where detectron2 and CropFormer are installed --------------------------------------

RELEASE = os.environ.get("MODUSEG_PAPER_RELEASE", "")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("detectron2") is None, reason="detectron2 is not installed (docs/paper.md)"
)
@pytest.mark.skipif(
    not Path(RELEASE, "CropFormer").is_dir(), reason="MODUSEG_PAPER_RELEASE names no checkout of the paper's release"
)
def test_paper_components_against_the_release(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "verify_paper_components.py"),
            "--release",
            RELEASE,
            "--work",
            str(tmp_path),
            "--bank",
            "2",
            "--eval",
            "1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"radio vs the release's feature extractor: max \|diff\| 0 ", run.stdout)
    found = re.search(r"entityseg vs the release's predictor: (\d+) of (\d+) masks identical, 0 of", run.stdout)
    assert found and found.group(1) == found.group(2)
    assert "run: exit code 0" in run.stdout
    yaml.safe_load((tmp_path / "run" / "report.json").read_text())


# -- moduseg doctor --------------------------------------------------------------------------------------


def doctor(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MODUSEG_LOAD_PLUGINS": ""}
    env.pop("MODUSEG_LOAD_PLUGINS")
    return subprocess.run(
        [sys.executable, "-m", "moduseg_core", "doctor", *args], capture_output=True, text=True, env=env
    )


@pytest.mark.skipif(
    importlib.util.find_spec("detectron2") is not None, reason="checks the lines shown without detectron2"
)
def test_doctor_names_detectron2_and_its_install_on_the_paper_preset(coco_mini):
    voc_layout = [
        "--set",
        "dataset.mask_dir=SegmentationClassVOC",
        "--set",
        "dataset.labels_file=image_labels_voc.json",
    ]
    run = doctor("-c", str(PRESETS / "paper-voc.yaml"), "--set", f"dataset.root={coco_mini}", *voc_layout)
    assert run.returncode == 2 and "Traceback" not in run.stderr + run.stdout
    lines = dict(line.split(None, 2)[1:] for line in run.stdout.splitlines() if line.startswith(("ok", "FAIL")))
    proposer = next(line for line in run.stdout.splitlines() if line.split()[1:2] == ["proposer"])
    assert proposer.startswith("FAIL") and "detectron2 not installed" in proposer
    assert "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'" in proposer
    assert lines["dataset"].startswith("voc: train") and "checks failed" in run.stderr


def test_doctor_on_the_demo_preset_is_all_ok(coco_mini):
    run = doctor("-c", str(PRESETS / "coco-mini.yaml"), "--set", f"dataset.root={coco_mini}")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line for line in run.stdout.splitlines() if line.split()[:1] in (["ok"], ["FAIL"])]
    assert len(lines) == 7 and all(line.startswith("ok") for line in lines) and "all 7 ok" in run.stdout


@pytest.mark.skipif(importlib.util.find_spec("detectron2") is not None, reason="checks the stop without detectron2")
def test_run_stops_before_the_job_on_what_doctor_finds(coco_mini, tmp_path):
    from moduseg_core.cli import main

    out = tmp_path / "run"
    sets = ["--set", f"dataset.root={coco_mini}", "--set", "dataset.mask_dir=SegmentationClassVOC"]
    assert main(["run", "-c", str(PRESETS / "paper-voc.yaml"), *sets, "--out", str(out)]) == 2
    assert not out.exists()  # nothing written
    assert main(["build-bank", "-c", str(PRESETS / "paper-voc.yaml"), *sets, "--out", str(out)]) == 2
    assert not out.exists()
