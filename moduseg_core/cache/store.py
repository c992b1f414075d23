"""The stage cache's store: content keys, and ``StageCache``, which finds, writes, lists and prunes entries.

Every entry lives at ``$MODUSEG_CACHE/stages/<stage>/<key[:2]>/<key><suffix>``; what a key covers
and what each stage holds is in the package's docstring (``moduseg_core/cache/__init__.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.cache.claims import is_claim_file
from moduseg_core.contract.config import Choice
from moduseg_core.contract.errors import ModusegError
from moduseg_core.files.io import atomic_path, remove_path, temp_writer_alive

#: Bump when an entry's layout or a key's meaning changes: old entries are then never read.
FORMAT = 1
STAGES = ("proposals", "features", "pooled", "banks", "predictions", "scores")
SUFFIXES = {
    "proposals": ".npz",
    "features": ".npz",
    "pooled": ".npz",
    "banks": "",
    "predictions": ".png",
    "scores": ".json",
}


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
    h.update(array.data.cast("B"))  # the contiguous array's buffer
    digest = h.hexdigest()
    if len(_DIGESTS) >= 16:
        _DIGESTS.pop(next(iter(_DIGESTS)))
    _DIGESTS[id(image)] = (image, digest)  # holding the array keeps its id from being reused
    return digest


def component_key(kind: str, choice: Choice) -> dict[str, Any]:
    """What identifies a component's output: name, non-runtime options, plugin and its version."""
    from moduseg_core.contract.components import identity
    from moduseg_core.contract.plugins import get_spec

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
        from moduseg_core import __version__

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

    def written_meanwhile(self, stage: str) -> None:
        """A miss whose entry another worker wrote while this one waited for its claim (``claims``):
        counted as the hit it turned out to be, so that misses count the entries this process computed."""
        self.misses[stage] -= 1
        self.hits[stage] += 1

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
                    if is_claim_file(item.name):  # a worker computing the entry right now (claims.py)
                        continue
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
            row = out.setdefault(
                entry.stage, {"entries": 0, "bytes": 0, "partial": 0, "oldest": entry.mtime, "newest": entry.mtime}
            )
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
        from moduseg_core.contract.errors import did_you_mean

        raise ModusegError(f"unknown cache stage {stage!r}{did_you_mean(stage, STAGES)} (stages: {', '.join(STAGES)})")
    return stage


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
