"""What ``moduseg bench`` measures besides the two loops: the encoder's FLOPs against the device's
matmul rate (the floor), peak GPU memory, bank building projected to VOC train_aug, the device."""

from __future__ import annotations

import os
import platform
import sys
import time
from contextlib import nullcontext
from typing import Any

import numpy as np

from moduseg_core.contract.components import Built, Timer, build
from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.kinds import BANK_KINDS

#: VOC 2012 train_aug, the bank the projection is made for
VOC_TRAIN_AUG = 10_582


def encoder_flops(encoder: Built, image: np.ndarray) -> float | None:
    """FLOPs of one ``encode`` of ``image`` as torch's FLOP counter sees them (None without torch)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    component = encoder.component
    # a compiled graph bypasses the counter: an encoder that can compile offers ``eager()``, a
    # context in which it runs its plain forward pass
    eager = getattr(component, "eager", None)
    counter = FlopCounterMode(display=False)
    with eager() if callable(eager) else nullcontext(), counter:
        component.encode(image)
    return float(counter.get_total_flops())


def matmul_rate(device: str, dtype_name: str, size: int | None = None, repeats: int = 10) -> float:
    """Measured FLOP/s of a square matrix product on ``device`` in ``dtype_name``."""
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
    cuda = str(device).startswith("cuda")
    size = size or (8192 if cuda else 1024)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - t0)


def encoder_floor(encoder: Built, image: np.ndarray, batch: int, repeats: int = 3) -> dict[str, Any]:
    """Encoder throughput at ``batch`` same-size images vs its FLOP floor on the device."""
    component = encoder.component
    device = str(getattr(component, "device", "cpu"))
    dtype = getattr(getattr(component, "options", None), "dtype", "float32")
    flops = encoder_flops(encoder, image)
    images = [image] * batch
    component.encode_batch(images)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        component.encode_batch(images)
    per_second = batch * repeats / (time.perf_counter() - t0)
    rate = matmul_rate(device, dtype)
    out = {"device": device, "dtype": dtype, "batch": batch, "image_hw": list(image.shape[:2]),
           "images_per_s": per_second, "matmul_flops_per_s": rate, "flops_per_image": flops}
    if flops:
        out["achieved_flops_per_s"] = flops * per_second
        out["fraction_of_floor"] = flops * per_second / rate
        out["floor_images_per_s"] = rate / flops
    return out


def gpu_memory() -> tuple[Any, Any]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return (lambda: None), (lambda: None)

    def reset() -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def peak() -> float:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30

    return reset, peak


def bank_projection(config: RunConfig, encoder: Built, n: int, propose_per_image: float) -> dict[str, Any]:
    """Time bank building (label, purify, encode, pool) over ``n`` bank images; project to VOC train_aug.
    ``propose_per_image`` (from (b)) is added for a labeler that also runs the proposer (map correction)."""
    from moduseg_core.pipeline.bank_build import build_bank
    from moduseg_core.pipeline.runner import dataset_info, open_dataset

    dataset, samples = open_dataset(config, config.bank_split, n)
    parts = {kind: build(kind, config.choice(kind)) for kind in BANK_KINDS if kind != "encoder"}
    timer = Timer()
    t0 = time.perf_counter()
    build_bank(
        samples,
        n_samples=len(samples),
        class_names=list(dataset.component.class_names),
        labeler=parts["labeler"],
        purifier=parts["purifier"],
        encoder=encoder,
        aggregator=parts["aggregator"],
        index_choice=config.index,
        method=config.method,
        dataset_info=dataset_info(dataset, samples),
        timer=timer,
    )
    per_image = (time.perf_counter() - t0) / len(samples)
    return {
        "images": len(samples), "wall_s": per_image * len(samples), "stages_s": dict(timer.seconds),
        "for_images": VOC_TRAIN_AUG,
        "projected_min": VOC_TRAIN_AUG * per_image / 60,
        "projected_with_proposer_min": VOC_TRAIN_AUG * (per_image + propose_per_image) / 60,
    }


def device_text() -> str:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {cpu_count()} cores" + (
        f" (torch {torch.__version__})" if torch is not None else ""
    )


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
