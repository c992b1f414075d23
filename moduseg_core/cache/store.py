"""The stage cache: results of pipeline stages stored under content fingerprints.

Every entry lives at ``$MODUSEG_CACHE/stages/<stage>/<key[:2]>/<key><suffix>`` (default
``~/.cache/moduseg/stages``). A key is the sha256 of what determines the result: the
component's name and non-runtime options (``components.identity``), the plugin that
registered it and its version, the moduseg version, this cache's format, and the content
of the image (a hash of its pixels; an image over ``method.work_pixels`` is proposed and
encoded at its working size, whose pixels are hashed) or of the upstream key. Changing any of them gives
another key, so an entry is never stale for its key; entries are written atomically
(``io.atomic_path``), so a killed process leaves none half-written.

Stages, in data-path order:

========== ===================================================== =====================
stage      key                                                   entry
========== ===================================================== =====================
proposals  proposer, image (pixels + id)                         ``.npz`` packed masks
features   encoder, image                                        ``.npz`` float32 tokens
pooled     proposals key, ``min_mask_area``, encoder, aggregator ``.npz`` vectors
banks      dataset split + files, labeler, purifier, encoder,    directory (a bank)
           aggregator, ``min_region_area``, ``filter_ratio``,
           ``work_pixels``
predictions bank key, proposer, index, ``top_k``, ``nms_iou``,   ``.png`` class map
           ``min_mask_area``, ``work_pixels``, image
scores     predictions key, eval split + files, metric settings  ``.json``
========== ===================================================== =====================

A plugin's output must be a function of its options and input for caching to be valid;
a component that reads files (``precomputed`` proposers and labelers) is keyed by its
options (the folder), not by the files in it: prune the cache after changing them.
Editing moduseg's own code without a version change is the same: ``moduseg cache prune --all``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .bank import Bank
from .components import Built
from .config import Choice, MethodConfig
from .errors import ModusegError
from .inference import Predictor
from .io import atomic_path, remove_path, temp_writer_alive
from .types import FeatureMap, Geometry, Prediction, Proposals

#: Bump when an entry's layout or a key's meaning changes: old entries are then never read.
FORMAT = 1
STAGES = ("proposals", "features", "pooled", "banks", "predictions", "scores")
SUFFIXES = {"proposals": ".npz", "features": ".npz", "pooled": ".npz", "banks": "", "predictions": ".png", "scores": ".json"}


def cache_base() -> Path:
    """``$MODUSEG_CACHE`` (default ``~/.cache/moduseg``); converted weights live there too."""
    return Path(os.environ.get("MODUSEG_CACHE") or Path.home() / ".cache" / "moduseg").expanduser()


def fingerprint(payload: Any) -> str:
    """sha256 of the canonical JSON of ``payload`` (sorted keys)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_DIGESTS: dict[int, tuple[np.ndarray, str]] = {}


def image_digest(image: np.ndarray) -> str:
    """A hash of an image's pixels, shape and dtype (remembered for the last few arrays seen)."""
    seen = _DIGESTS.get(id(image))
    if seen is not None and seen[0] is image:
        return seen[1]
    array = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.shape}{array.dtype}".encode())
    h.update(memoryview(array).cast("B"))
    digest = h.hexdigest()
    if len(_DIGESTS) >= 16:
        _DIGESTS.pop(next(iter(_DIGESTS)))
    _DIGESTS[id(image)] = (image, digest)  # holding the array keeps its id from being reused
    return digest


def component_key(kind: str, choice: Choice) -> dict[str, Any]:
    """What identifies a component's output: name, non-runtime options, plugin and its version."""
    from .components import identity
    from .plugins import get_spec

    return {**identity(kind, choice), "plugin": get_spec(kind, choice.name).plugin}


@dataclass(frozen=True)
class Entry:
    stage: str
    key: str
    path: Path
    bytes: int
    mtime: float
    partial: bool = False  # a temporary left by a killed writer


class StageCache:
    """Content-addressed stage results with hit/miss counters per stage."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else cache_base() / "stages"
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"StageCache({str(self.root)!r})"

    def key(self, stage: str, payload: dict[str, Any]) -> str:
        from . import __version__

        return fingerprint({"stage": stage, "format": FORMAT, "moduseg": __version__, **payload})

    def path(self, stage: str, key: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown cache stage {stage!r}")
        return self.root / stage / key[:2] / f"{key}{SUFFIXES[stage]}"

    def get(self, stage: str, key: str) -> Path | None:
        """The entry's path if present (its time is refreshed, so prune keeps what is used), else None."""
        path = self.path(stage, key)
        if path.exists():
            try:
                os.utime(path)
            except OSError:
                pass
            self.hits[stage] += 1
            return path
        self.misses[stage] += 1
        return None

    @contextmanager
    def put(self, stage: str, key: str) -> Iterator[Path]:
        """Write an entry: yields a temporary path that becomes the entry only on success.
        Temporaries of this entry left by a killed writer (its process gone) are removed first."""
        path = self.path(stage, key)
        if path.parent.is_dir():
            for stale in path.parent.glob(f".{path.name}.*.tmp"):
                if not temp_writer_alive(stale.name):
                    remove_path(stale)
        with atomic_path(path) as tmp:
            yield tmp

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {"hit": self.hits[s], "miss": self.misses[s]} for s in STAGES if self.hits[s] or self.misses[s]}

    # -- maintenance -------------------------------------------------------------------------

    def entries(self, stage: str | None = None) -> Iterator[Entry]:
        stages = STAGES if stage is None else (check_stage(stage),)
        for name in stages:
            folder = self.root / name
            if not folder.is_dir():
                continue
            for shard in sorted(folder.iterdir()):
                if not shard.is_dir():
                    continue
                for item in sorted(shard.iterdir()):
                    partial = item.name.startswith(".")
                    key = item.name.split(".")[1] if partial else item.name.split(".")[0]
                    try:
                        mtime = item.stat().st_mtime
                    except FileNotFoundError:
                        continue
                    yield Entry(name, key, item, _size(item), mtime, partial)

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for entry in self.entries():
            row = out.setdefault(entry.stage, {"entries": 0, "bytes": 0, "partial": 0, "oldest": entry.mtime, "newest": entry.mtime})
            row["entries"] += 0 if entry.partial else 1
            row["partial"] += int(entry.partial)
            row["bytes"] += entry.bytes
            row["oldest"] = min(row["oldest"], entry.mtime)
            row["newest"] = max(row["newest"], entry.mtime)
        return out

    def prune(self, *, older_than_days: float | None = None, stage: str | None = None) -> tuple[int, int]:
        """Delete entries (of ``stage``, or all) not used for ``older_than_days`` (None: all of them).
        Returns (entries removed, bytes freed)."""
        cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
        removed = freed = 0
        for entry in list(self.entries(stage)):
            if cutoff is not None and entry.mtime >= cutoff:
                continue
            if entry.path.is_dir() and not entry.path.is_symlink():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                entry.path.unlink(missing_ok=True)
            removed += 1
            freed += entry.bytes
        for name in STAGES if stage is None else (stage,):
            folder = self.root / name
            if folder.is_dir():
                for shard in folder.iterdir():
                    if shard.is_dir() and not any(shard.iterdir()):
                        shard.rmdir()
        return removed, freed


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        from .errors import did_you_mean

        raise ModusegError(f"unknown cache stage {stage!r}{did_you_mean(stage, STAGES)} (stages: {', '.join(STAGES)})")
    return stage


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# -- entry formats --------------------------------------------------------------------------------


def save_proposals(path: Path, proposals: Proposals) -> None:
    n, height, width = proposals.masks.shape
    packed = np.packbits(proposals.masks.reshape(n, -1), axis=1)
    with open(path, "wb") as f:
        np.savez_compressed(f, packed=packed, shape=np.array([n, height, width], np.int64), scores=proposals.scores)


def load_proposals(path: Path) -> Proposals:
    with np.load(path) as data:
        n, height, width = (int(v) for v in data["shape"])
        masks = np.unpackbits(data["packed"], axis=1, count=height * width).reshape(n, height, width).view(bool)
        return Proposals(masks, data["scores"].astype(np.float32))


def save_features(path: Path, features: FeatureMap) -> None:
    g = features.geometry
    geometry = np.array([*g.image_hw, *g.resized_hw, *g.padded_hw, g.patch_size], np.int64)
    with open(path, "wb") as f:
        np.savez(f, tokens=features.tokens, geometry=geometry)


def load_features(path: Path) -> FeatureMap:
    with np.load(path) as data:
        v = [int(x) for x in data["geometry"]]
        geometry = Geometry((v[0], v[1]), (v[2], v[3]), (v[4], v[5]), v[6])
        return FeatureMap(np.ascontiguousarray(data["tokens"], dtype=np.float32), geometry)


def save_prediction(path: Path, prediction: Prediction, seen: int) -> None:
    from PIL import Image, PngImagePlugin

    from .io import voc_palette

    info = PngImagePlugin.PngInfo()
    meta = {"seen": int(seen), "labels": prediction.labels.tolist(), "scores": [float(s) for s in prediction.scores]}
    info.add_text("moduseg", json.dumps(meta))
    img = Image.fromarray(prediction.semantic.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().ravel().tolist())
    img.save(path, format="PNG", pnginfo=info)


def load_prediction(path: Path) -> tuple[Prediction, int]:
    """A cached class map with its kept labels and scores (the kept masks are not stored), and
    the number of proposals the prediction saw."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        semantic = np.asarray(img, dtype=np.int32)
        meta = json.loads(img.text.get("moduseg", "{}"))
    height, width = semantic.shape
    labels = np.asarray(meta.get("labels", []), np.int32)
    scores = np.asarray(meta.get("scores", []), np.float32)
    return Prediction(semantic, np.zeros((0, height, width), bool), labels, scores), int(meta.get("seen", 0))


# -- cache-aware components -----------------------------------------------------------------------


class _Lazy:
    """Builds the wrapped component on first use, so a fully cached stage never loads a model."""

    def __init__(self, build: Callable[[], Any]):
        self._build = build
        self._inner: Any = None

    @property
    def inner(self) -> Any:
        if self._inner is None:
            self._inner = self._build()
        return self._inner

    @property
    def built(self) -> bool:
        return self._inner is not None


class CachedProposer(_Lazy):
    """A ``MaskProposer`` serving ``propose`` from the ``proposals`` stage."""

    def __init__(self, cache: StageCache, choice: Choice, build: Callable[[], Any]):
        super().__init__(build)
        self.cache = cache
        self.identity = component_key("proposer", choice)
        self.computed = 0

    def entry_key(self, image: np.ndarray, image_id: str | None) -> str:
        return self.cache.key("proposals", {"proposer": self.identity, "image": image_digest(image), "id": image_id})

    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Proposals:
        key = self.entry_key(image, image_id)
        hit = self.cache.get("proposals", key)
        if hit is not None:
            return load_proposals(hit)
        found = self.inner.propose(image, image_id=image_id)
        self.computed += 1
        with self.cache.put("proposals", key) as tmp:
            save_proposals(tmp, found)
        return found


class CachedEncoder(_Lazy):
    """A ``FeatureEncoder`` serving patch tokens from the ``features`` stage; only misses are encoded."""

    def __init__(self, cache: StageCache, choice: Choice, build: Callable[[], Any]):
        super().__init__(build)
        self.cache = cache
        self.identity = component_key("encoder", choice)
        #: images the wrapped encoder actually ran on / images served from the cache
        self.passes = 0
        self.served = 0

    def entry_key(self, image: np.ndarray) -> str:
        return self.cache.key("features", {"encoder": self.identity, "image": image_digest(image)})

    def encode(self, image: np.ndarray) -> FeatureMap:
        return self.encode_batch([image])[0]

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[FeatureMap]:
        images = list(images)
        keys = [self.entry_key(image) for image in images]
        out: list[FeatureMap | None] = [None] * len(images)
        missing = []
        for i, key in enumerate(keys):
            hit = self.cache.get("features", key)
            if hit is None:
                missing.append(i)
            else:
                out[i] = load_features(hit)
                self.served += 1
        if missing:
            encoded = self.inner.encode_batch([images[i] for i in missing])
            self.passes += len(missing)
            for i, features in zip(missing, encoded):
                with self.cache.put("features", keys[i]) as tmp:
                    save_features(tmp, features)
                out[i] = features
        return out  # type: ignore[return-value]


def cached_built(kind: str, choice: Choice, component: Any) -> Built:
    from .plugins import build_options

    return Built(kind, choice.name, build_options(kind, choice.name, choice.options), component)


class CachingPredictor(Predictor):
    """A ``Predictor`` whose stages read and fill the cache.

    ``propose`` and ``encode`` go through ``CachedProposer`` / ``CachedEncoder``;
    ``describe`` (encode + pool) is served from the ``pooled`` stage; ``predict_batch``
    serves whole predictions from the ``predictions`` stage. The bank is loaded on first
    use, so predictions that are all cached never touch it. The logic of every stage is
    the parent's: misses are handed to it unchanged.
    """

    #: whole batches go through ``predict_batch`` (the prediction cache sits there), not split in two
    streams = False

    def __init__(
        self,
        bank: Callable[[], Bank],
        proposer: Built,
        encoder: Built,
        aggregator: Built,
        method: MethodConfig,
        *,
        cache: StageCache,
        pooled_base: dict[str, Any],
        prediction_base: dict[str, Any],
    ):
        self._bank_loader = bank
        self._bank: Bank | None = None
        super().__init__(None, proposer, encoder, aggregator, method)  # type: ignore[arg-type]
        self.cache = cache
        self.pooled_base = pooled_base
        self.prediction_base = prediction_base
        self.computed: Counter[str] = Counter()
        self._seen: list[int] = []
        self._pooled: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def bank(self) -> Bank:  # type: ignore[override]
        if self._bank is None:
            self._bank = self._bank_loader()
        return self._bank

    @bank.setter
    def bank(self, value: Bank | None) -> None:
        self._bank = value

    @property
    def bank_loaded(self) -> bool:
        return self._bank is not None

    def prediction_key(self, image: np.ndarray, image_id: str | None) -> str:
        return self.cache.key("predictions", {**self.prediction_base, "image": image_digest(image), "id": image_id})

    def predict_batch(self, images: Sequence[np.ndarray], ids: Sequence[str | None]) -> list[Prediction]:
        keys = [self.prediction_key(image, image_id) for image, image_id in zip(images, ids)]
        out: list[Prediction | None] = [None] * len(images)
        missing = []
        t0 = time.perf_counter()
        for i, key in enumerate(keys):
            hit = self.cache.get("predictions", key)
            if hit is None:
                missing.append(i)
                continue
            out[i], seen = load_prediction(hit)
            self.masks_seen += seen
            self.masks_kept += len(out[i].labels)
        self.timer.add("cached_predictions", time.perf_counter() - t0)
        if missing:
            self._seen = []
            predicted = super().predict_batch([images[i] for i in missing], [ids[i] for i in missing])
            for i, prediction, seen in zip(missing, predicted, self._seen):
                with self.cache.put("predictions", keys[i]) as tmp:
                    save_prediction(tmp, prediction, seen)
                out[i] = prediction
            self.computed["predictions"] += len(missing)
        return out  # type: ignore[return-value]

    def decide(self, image_hw: tuple[int, int], masks: np.ndarray, vectors: np.ndarray) -> Prediction:
        if len(masks):
            self.bank  # noqa: B018 — load (or build) the bank outside the retrieval timer
        return super().decide(image_hw, masks, vectors)

    def propose(self, image: np.ndarray, image_id: str | None) -> Proposals:
        found = super().propose(image, image_id)
        self._seen.append(len(found))
        return found

    def describe(
        self, images: Sequence[np.ndarray], ids: Sequence[str | None], proposals: Sequence[Proposals]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        keys = [
            self.cache.key("pooled", {**self.pooled_base, "image": image_digest(image), "id": image_id})
            for image, image_id in zip(images, ids)
        ]
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(images)
        missing = []
        t0 = time.perf_counter()
        for i, key in enumerate(keys):
            hit = self.cache.get("pooled", key) if len(proposals[i]) else None
            if hit is None:
                missing.append(i)
                continue
            with np.load(hit) as data:
                ok, vectors = data["ok"], data["vectors"]
            if len(ok) != len(proposals[i]):  # cannot happen for a valid key; recompute rather than trust it
                missing.append(i)
                continue
            self.masks_seen += len(proposals[i])
            out[i] = (proposals[i].masks[ok], vectors)
        self.timer.add("cached_pool", time.perf_counter() - t0)
        if missing:
            self._pooled = []
            described = super().describe([images[i] for i in missing], [ids[i] for i in missing], [proposals[i] for i in missing])
            pooled = iter(self._pooled)  # one (ok, vectors) per image that had proposals, in order
            for i, (masks, vectors) in zip(missing, described):
                out[i] = (masks, vectors)
                if not len(proposals[i]):
                    continue
                ok, _ = next(pooled)
                with self.cache.put("pooled", keys[i]) as tmp, open(tmp, "wb") as f:
                    np.savez(f, ok=ok, vectors=vectors)
                self.computed["pooled"] += 1
        return out  # type: ignore[return-value]

    def pool(self, features: FeatureMap, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok, vectors = super().pool(features, masks)
        self._pooled.append((ok, vectors))
        return ok, vectors
