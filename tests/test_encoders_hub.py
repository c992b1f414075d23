"""Every encoder by its REAL hub id, resolved from an offline Hugging Face cache.

Tiny random-weight checkpoints of the real model classes are laid out under the published ids
(blobs, a snapshot of symlinks, refs/main — as huggingface_hub writes them), with the size-
specific architecture features: DINOv2 S/B/L/G with and without registers (giant: SwiGLU MLP),
DINOv3 S and H+ (gated MLP), SigLIP, an open_clip hf-hub repo, and C-RADIOv4-SO400M — the latter
with the RADIO STAND-IN model code (tests/radio_standin), loaded by transformers' real
trust_remote_code path, as is a local copy of that repo. Each id is encoded in a fresh process
(huggingface_hub reads HF_HOME at import) and compared with the same checkpoint loaded locally;
with an empty cache each id fails with one line that names it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")

import encoder_checkpoints as ec
import torch

from moduseg_core import get_component

pytestmark = pytest.mark.slow

RADIO_ID = "nvidia/C-RADIOv4-SO400M"

#: (encoder, hub id, builder) — the builders mirror each size's architecture features
DINOV2 = [
    (f"facebook/dinov2-{size}", dict(registers=0, swiglu=size == "giant"))
    for size in ("small", "base", "large", "giant")
] + [
    (f"facebook/dinov2-with-registers-{size}", dict(registers=4, swiglu=size == "giant"))
    for size in ("small", "base", "large", "giant")
]
DINOV3 = [
    ("facebook/dinov3-vits16-pretrain-lvd1689m", dict(gated=False)),
    ("facebook/dinov3-vith16plus-pretrain-lvd1689m", dict(gated=True)),
]

SCRIPT = textwrap.dedent(
    """
    import json, sys, numpy as np
    import moduseg_core as ms
    from moduseg_core import ModusegError
    jobs, image_path = json.loads(sys.argv[1]), sys.argv[2]
    image = np.load(image_path)
    report = []
    for name, model, out in jobs:
        try:
            enc = ms.get_component("encoder", name, model=model, device="cpu")
            np.save(out, enc.encode(image).tokens)
            report.append({"model": model, "dim": enc.dim, "patch": enc.patch_size,
                           "prefix": getattr(enc, "prefix_tokens", None)})
        except ModusegError as exc:
            report.append({"model": model, "error": str(exc)})
    print(json.dumps(report))
    """
)


def run_isolated(tmp_path: Path, hf_home: Path, jobs: list, image: np.ndarray) -> list[dict]:
    np.save(tmp_path / "image.npy", image)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"), HF_HUB_OFFLINE="1")
    env["MODUSEG_LOAD_PLUGINS"] = ec.ENCODER_PLUGINS
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(jobs), str(tmp_path / "image.npy")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    yield from ec.isolated_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def image(coco_mini) -> np.ndarray:
    return next(iter(ec.real_images(coco_mini, 1).values()))[:90, :130]


def test_hub_ids_from_an_offline_cache(tmp_path, image):
    sources = tmp_path / "sources"
    hub = tmp_path / "hf" / "hub"
    local: dict[str, tuple[str, str]] = {}  # hub id → (encoder, local model option)
    for i, (repo, kw) in enumerate(DINOV2):
        ec.save_dinov2(sources / repo, seed=i, **kw)
        local[repo] = ("dinov2", str(sources / repo))
    for i, (repo, kw) in enumerate(DINOV3):
        ec.save_dinov3(sources / repo, seed=10 + i, **kw)
        local[repo] = ("dinov3", str(sources / repo))
    ec.save_siglip(sources / "google/siglip-base-patch16-224", seed=20)
    local["google/siglip-base-patch16-224"] = ("siglip", str(sources / "google/siglip-base-patch16-224"))
    ec.save_clip(sources / "moduseg-test/tiny-clip", seed=21)
    local["hf-hub:moduseg-test/tiny-clip"] = ("clip", f"local-dir:{sources / 'moduseg-test/tiny-clip'}")
    for repo in local:
        ec.write_hub_cache(hub, repo.removeprefix("hf-hub:"), sources / repo.removeprefix("hf-hub:"))
    radio = ec.save_radio_hf(sources / RADIO_ID, seed=22)
    ec.write_hub_cache(hub, RADIO_ID, sources / RADIO_ID)

    jobs = [[encoder, repo, str(tmp_path / f"{i}.npy")] for i, (repo, (encoder, _)) in enumerate(local.items())]
    jobs.append(["radio", RADIO_ID, str(tmp_path / "radio-hub.npy")])
    jobs.append(["radio", str(sources / RADIO_ID), str(tmp_path / "radio-local.npy")])
    report = run_isolated(tmp_path, tmp_path / "hf", jobs, image)
    assert [r.get("error") for r in report] == [None] * len(jobs), report

    by_model = {r["model"]: r for r in report}
    for i, (repo, (encoder, source)) in enumerate(local.items()):
        reference = get_component("encoder", encoder, model=source, device="cpu")
        assert by_model[repo]["dim"] == reference.dim == 32
        assert by_model[repo]["prefix"] == getattr(reference, "prefix_tokens", None)
        ec.close(np.load(tmp_path / f"{i}.npy"), reference.encode(image).tokens, rel=1e-5)
    # the registers are dropped as prefix tokens; DINOv3 has 4, SigLIP none
    assert by_model["facebook/dinov2-with-registers-giant"]["prefix"] == 5
    assert by_model["facebook/dinov2-giant"]["prefix"] == 1
    assert by_model["facebook/dinov3-vits16-pretrain-lvd1689m"]["prefix"] == 5
    assert by_model["google/siglip-base-patch16-224"]["prefix"] == 0

    x = ec.pad_black(image, 16)
    with torch.inference_mode():
        _, spatial = radio(x)
    expected = spatial[0].reshape(x.shape[-2] // 16, x.shape[-1] // 16, -1).numpy()
    ec.close(np.load(tmp_path / "radio-hub.npy"), expected)
    ec.close(np.load(tmp_path / "radio-local.npy"), expected)


def test_hub_ids_missing_from_the_cache_fail_in_one_line(tmp_path, image):
    ids = [
        ("dinov2", "facebook/dinov2-with-registers-large"),
        ("dinov3", "facebook/dinov3-vitl16-pretrain-lvd1689m"),
        ("siglip", "google/siglip-so400m-patch14-384"),
        ("clip", "hf-hub:timm/vit_base_patch16_clip_224.metaclip_2pt5b"),
        ("clip", "ViT-B-16"),  # the metaclip_fullcc tag: weights from the hub, not cached
        ("radio", RADIO_ID),
    ]
    jobs = [[name, model, str(tmp_path / f"{i}.npy")] for i, (name, model) in enumerate(ids)]
    report = run_isolated(tmp_path, tmp_path / "empty", jobs, image)
    for (_, model), entry in zip(ids, report, strict=True):
        message = entry.get("error")
        assert message and "\n" not in message, entry
        assert repr(model) in message, message
        assert "download" in message, message
