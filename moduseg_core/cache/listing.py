"""What ``moduseg cache list | size | prune`` print: the stage cache's entries, sizes and ages as text."""

from __future__ import annotations

import json
import time

from moduseg_core.cache.store import StageCache, check_stage
from moduseg_core.contract.errors import ModusegError


def age_text(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.1f} d" if days >= 1 else f"{seconds / 3600:.1f} h"


def bytes_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def list_text(cache: StageCache, stage: str | None = None, *, as_json: bool = False) -> str:
    """Stages with their entry counts, sizes and ages; with ``stage``, every entry of it."""
    now = time.time()
    if stage is not None:
        check_stage(stage)
        entries = list(cache.entries(stage))
        if as_json:
            rows = [
                {"key": e.key, "bytes": e.bytes, "mtime": e.mtime, "partial": e.partial, "path": str(e.path)}
                for e in entries
            ]
            return json.dumps(rows, indent=1)
        lines = [
            f"{e.key[:16]}  {bytes_text(e.bytes):>10}  used {age_text(now - e.mtime)} "
            f"ago{'  (partial)' if e.partial else ''}"
            for e in entries
        ]
        lines.append(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in {cache.root / stage}")
        return "\n".join(lines)
    summary = cache.summary()
    if as_json:
        return json.dumps({"root": str(cache.root), "stages": summary}, indent=1)
    lines = [f"stage cache: {cache.root}"]
    if not summary:
        lines.append("  (empty)")
    for name, row in summary.items():
        partial = f", {row['partial']} partial" if row["partial"] else ""
        lines.append(
            f"  {name:<12} {row['entries']:>7} entries  {bytes_text(row['bytes']):>10}  "
            f"newest {age_text(now - row['newest'])}, oldest {age_text(now - row['oldest'])} ago{partial}"
        )
    return "\n".join(lines)


def size_text(cache: StageCache, stage: str | None = None) -> str:
    """Total size of the stage cache (or of one stage)."""
    if stage is not None:
        check_stage(stage)
    summary = cache.summary()
    total = sum(row["bytes"] for name, row in summary.items() if stage in (None, name))
    count = sum(row["entries"] for name, row in summary.items() if stage in (None, name))
    where = cache.root if stage is None else cache.root / stage
    return f"{bytes_text(total)} in {count} entries ({total} bytes) under {where}"


def prune_text(
    cache: StageCache, *, older_than: float | None = None, stage: str | None = None, everything: bool = False
) -> str:
    """Delete entries by age (``older_than`` days) or all of them (``everything``); what was removed."""
    if older_than is None and not everything:
        raise ModusegError("cache prune needs --older-than DAYS or --all; e.g. moduseg cache prune --older-than 30")
    if older_than is not None and everything:
        raise ModusegError("cache prune takes --older-than DAYS or --all, not both")
    if older_than is not None and older_than < 0:
        raise ModusegError(f"--older-than {older_than} is negative; give a number of days ≥ 0")
    if stage is not None:
        check_stage(stage)
    removed, freed = cache.prune(older_than_days=older_than, stage=stage)
    return f"removed {removed} entr{'y' if removed == 1 else 'ies'} ({bytes_text(freed)}) from {cache.root}"
