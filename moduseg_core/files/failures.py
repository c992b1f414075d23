"""Per-image failures of long jobs, under the ``on_error`` policy.

``on_error: fail`` (the default) stops the job at the first image that cannot be processed, with its
one-line error: nothing is silently missing from a metric. ``on_error: skip`` (``--on-error skip`` or
``--set on_error=skip``) goes on: each failed image is logged with its reason to ``errors.jsonl`` in the
output folder (one JSON object a line), the report counts them, and the command exits with
``EXIT_SKIPPED`` (3). A job in which every image failed still fails.

What can be skipped is what belongs to one image: reading or decoding it or its mask, labelling,
proposing, encoding, pooling, retrieval. Writing the outputs is not: a full disk stops the job.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moduseg_core.contract.errors import ModusegError

ON_ERROR = ("fail", "skip")
#: Exit code of a command that finished but skipped images (``on_error: skip``).
EXIT_SKIPPED = 3
ERRORS_FILE = "errors.jsonl"


@dataclass(frozen=True)
class Failure:
    """An image that could not be processed: the stage and the exception."""

    stage: str
    error: BaseException

    def reason(self) -> str:
        return reason(self.error)


def reason(error: BaseException) -> str:
    """One line: a ModusegError's own message, else ``Type: message``."""
    text = " ".join(str(error).split())
    if isinstance(error, ModusegError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class ErrorLog:
    """Collects the failed images of one job; with ``skip``, writes them to ``errors.jsonl`` in the
    output folder once it is ``open``ed (failures before that, e.g. while a bank is built and nothing
    is written yet, are kept and written then). ``context`` is added to every record (a sweep's point)."""

    def __init__(self, policy: str, folder: Path | None = None):
        if policy not in ON_ERROR:
            raise ModusegError(f"on_error={policy!r} is invalid; allowed: {', '.join(ON_ERROR)}")
        self.policy = policy
        self.folder: Path | None = None
        self.context: dict[str, Any] = {}
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._written = 0
        if folder is not None:
            self.open(folder)

    @property
    def skip(self) -> bool:
        return self.policy == "skip"

    @property
    def path(self) -> Path | None:
        return self.folder / ERRORS_FILE if self.folder is not None else None

    def __len__(self) -> int:
        return len(self.records)

    def open(self, folder: Path | str) -> None:
        """Write to ``folder``/errors.jsonl from now on (the failures so far first)."""
        self.folder = Path(folder)
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self.folder is None or self._written == len(self.records):
            return
        from moduseg_core.files.io import notify_written

        path = self.folder / ERRORS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        # this job's first failure starts the file afresh: a rerun replaces the old log
        with open(path, "a" if self._written else "w", encoding="utf-8") as f:
            for record in self.records[self._written :]:
                f.write(json.dumps(record) + "\n")
        self._written = len(self.records)
        notify_written(path)

    def add(self, sample: Any, stage: str, error: BaseException) -> None:
        """Log one failed image (``sample`` has ``id`` and ``image_path``); with ``fail`` it is re-raised."""
        if not self.skip:
            raise error
        from moduseg_core.files.progress import note

        record = {"image": sample.id, "path": str(sample.image_path), **self.context, "stage": stage,
                  "error": type(error).__name__, "reason": reason(error)}
        with self._lock:
            self.records.append(record)
            self._flush()
        where = "".join(f"{k} {v}, " for k, v in self.context.items())
        note(f"skipped image {sample.id} ({where}{stage}): {record['reason']}")

    def extend(self, records: list[dict[str, Any]]) -> None:
        """Add failures another process logged (a Ray worker's records, already in this log's format)."""
        with self._lock:
            self.records.extend(records)
            self._flush()

    def check_some_succeeded(self, total: int, since: int = 0) -> None:
        """Refuse a job whose every image (of the ``total`` processed since record ``since``) failed."""
        failed = self.records[since:]
        if total and len(failed) >= total:
            first = failed[0]
            raise ModusegError(
                f"all {total} images failed (on_error=skip), so there is nothing to report; "
                f"the first, {first['image']} ({first['stage']}): {first['reason']}; see {ERRORS_FILE}"
            )
