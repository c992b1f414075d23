"""One sweep point's parts that do not run it: the split guard, the stage keys, the report's fields.

``point_keys`` gives the keys a point's stages are stored under (``run.SweepRun`` computes and reads
them; the driver of ``ablate --executor ray`` uses them to tell which points are already scored).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moduseg_core.ablate.sweep import Point
from moduseg_core.cache import CachingPredictor, StageCache, component_key, fingerprint
from moduseg_core.contract.components import Built
from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.kinds import BANK_KINDS
from moduseg_core.contract.types import Sample
from moduseg_core.files.io import write_json, write_text
from moduseg_core.method.boundary import BF_TOLERANCE, BIOU_DILATION
from moduseg_core.pipeline.runner import report_markdown, score_rules

#: Bump when the evaluation changes, so cached scores are recomputed.
METRICS_VERSION = 1


def files_digest(samples: Sequence[Sample]) -> str:
    """Short hash of each sample's image and mask file (path, size, modification time): a cheap
    guard that re-keys a bank or a score when a file of its split is replaced."""
    h = hashlib.sha256()
    for s in samples:
        for path in (s.image_path, s.mask_path):
            if path is None:
                h.update(b"-\n")
                continue
            try:
                st = Path(path).stat()
                h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{path}|missing\n".encode())
    return h.hexdigest()[:16]


@dataclass
class Split:
    dataset: Built
    samples: list[Sample]
    info: dict[str, Any]



def is_oracle(config: RunConfig) -> bool:
    from moduseg_core.contract.components import is_oracle

    return is_oracle(config.labeler)


def bank_summary(cache: StageCache, bank_key: str, predictor: CachingPredictor) -> dict[str, Any]:
    """Size, per-class counts and components of the point's bank, read from its manifest
    (the bank itself is not loaded when every prediction came from the cache)."""
    import json

    if predictor.bank_loaded:
        bank = predictor.bank
        return {"size": len(bank), "per_class": bank.counts(), "dataset": bank.manifest["dataset"],
                "components": bank.manifest["components"]}
    manifest_path = cache.path("banks", bank_key) / "manifest.json"
    if not manifest_path.is_file():
        return {"size": None}
    manifest = json.loads(manifest_path.read_text())
    return {"size": sum(manifest["counts"]["vectors"].values()), "per_class": manifest["counts"]["vectors"],
            "dataset": manifest["dataset"], "components": manifest["components"]}


def delta(cache: StageCache, hits0, misses0) -> dict[str, dict[str, int]]:
    out = {}
    for stage in set(cache.hits) | set(cache.misses):
        hit, miss = cache.hits[stage] - hits0[stage], cache.misses[stage] - misses0[stage]
        if hit or miss:
            out[stage] = {"hit": hit, "miss": miss}
    return out


def point_fields(point: Point) -> dict[str, Any]:
    return {"point": point.index, "slug": point.slug, "label": point.label, "axes": point.values}


def write_point(out: Path, report: dict[str, Any]) -> None:
    write_json(out / "report.json", report)
    write_text(out / "report.md", report_markdown(report))


@dataclass
class PointKeys:
    """Where a point's bank and scores are stored, and the bases of its per-image keys."""

    bank: str
    scores: str
    pooled_base: dict[str, Any]
    prediction_base: dict[str, Any]


def point_keys(cache: StageCache, config: RunConfig, bank_split: Split, eval_split: Split) -> PointKeys:
    bank_key = cache.key("banks", {
        "dataset": bank_split.info,
        **{kind: component_key(kind, config.choice(kind)) for kind in BANK_KINDS},
        "method": {k: getattr(config.method, k) for k in ("min_region_area", "filter_ratio", "work_pixels")},
    })
    pooled_base = {
        "proposer": component_key("proposer", config.proposer),
        "min_mask_area": config.method.min_mask_area,
        "encoder": component_key("encoder", config.encoder),
        "aggregator": component_key("aggregator", config.aggregator),
    }
    prediction_base = {
        "bank": bank_key,
        "proposer": component_key("proposer", config.proposer),
        "index": component_key("index", config.index),
        "method": {k: getattr(config.method, k) for k in ("top_k", "nms_iou", "min_mask_area", "work_pixels")},
    }
    scores_key = cache.key("scores", {
        "predictions": fingerprint(prediction_base),
        "eval": eval_split.info,
        "metrics": {"version": METRICS_VERSION, "tolerance": BF_TOLERANCE, "dilation_ratio": BIOU_DILATION,
                    **score_rules(config, eval_split.dataset.component)},
    })
    return PointKeys(bank_key, scores_key, pooled_base, prediction_base)
