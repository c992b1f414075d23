"""Claims: at most one worker computes a cache entry at a time, on one machine or many.

A worker that misses an entry claims it before computing it: it creates ``.NAME.claim`` next to the
entry (``os.open`` with ``O_CREAT | O_EXCL``, atomic on local file systems and NFS alike) holding its
host, process id and a random token, computes, writes the entry (a temporary that is renamed:
``StageCache.put``) and removes the claim. A worker that finds the claim taken waits until the entry
appears and reads it, or until the claim is gone (its owner failed without writing it: it claims the
entry itself).

A claim is **stale**, and is taken over, when its owner's process is gone (same host), or when it
has not been refreshed for ``MODUSEG_CLAIM_STALE_S`` seconds (default 120; a dead node, a killed
job): every process refreshes the claims it holds every quarter of that (a daemon thread touches
them), however long the computation takes. Taking over renames the claim aside first, so two
workers that both judge it stale do not both remove it; a fresh claim renamed by mistake is put back.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

CLAIM_SUFFIX = ".claim"
#: Environment variable: seconds without a refresh after which a claim is stale.
STALE_ENV = "MODUSEG_CLAIM_STALE_S"
DEFAULT_STALE_S = 120.0
#: How often a waiting worker looks again (seconds).
POLL_S = 0.2


def stale_after() -> float:
    text = os.environ.get(STALE_ENV, "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_STALE_S
    return value if value > 0 else DEFAULT_STALE_S


def claim_path(entry: Path) -> Path:
    """The claim file of the cache entry ``entry``: ``.NAME.claim`` beside it."""
    return entry.parent / f".{entry.name}{CLAIM_SUFFIX}"


def is_claim_file(name: str) -> bool:
    return name.startswith(".") and name.endswith((CLAIM_SUFFIX, ".stale"))


class Claim:
    """A claim this process holds; ``release`` removes it (only if it is still this process's)."""

    def __init__(self, path: Path, token: str):
        self.path, self.token = path, token

    def release(self) -> None:
        _HEARTBEAT.drop(self)
        if read_owner(self.path).get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def read_owner(path: Path) -> dict[str, Any]:
    """The claim's content ({} when it is missing, empty or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def try_claim(entry: Path) -> Claim | None:
    """Claim ``entry``; None when another live worker holds it (a stale claim is taken over first)."""
    path = claim_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_owner(path)
            if not is_stale(path, owner):
                return None
            take_over(path, owner)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "token": token, "since": time.time()}, f)
        claim = Claim(path, token)
        _HEARTBEAT.add(claim)
        return claim
    return None


def is_stale(path: Path, owner: dict[str, Any], *, now: float | None = None) -> bool:
    """Whether the claim at ``path`` (content ``owner``) may be taken over: its process is gone (this
    host), or it was not refreshed for ``stale_after()`` seconds."""
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False  # released meanwhile: claim it normally
    if age > stale_after():
        return True
    pid = owner.get("pid")
    if owner.get("host") == socket.gethostname() and isinstance(pid, int) and pid != os.getpid():
        return not _alive(pid)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def take_over(path: Path, owner: dict[str, Any]) -> None:
    """Remove the stale claim ``path`` whose content was ``owner``: renamed aside first (atomic, so one
    worker wins); a claim that is not the stale one (renewed meanwhile) is put back."""
    from moduseg_core.files.progress import note

    aside = path.parent / f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.stale"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        if read_owner(aside).get("token") != owner.get("token"):
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)  # someone's fresh claim: back where it was
        else:
            note(f"taking over the stale claim of process {owner.get('pid', '?')} on {owner.get('host', '?')} "
                 f"({path.parent.parent.name}/{path.name[1:-len(CLAIM_SUFFIX)][:16]}...)")
    finally:
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()


def wait_free(entry: Path, *, on_wait: Callable[[], None] | None = None) -> Path | None:
    """Wait while another worker holds ``entry``'s claim: the entry's path once it exists, or None when
    the claim is gone without an entry (or was stale and is removed): then the caller computes it."""
    path = claim_path(entry)
    waited = False
    while True:
        if entry.exists():
            return entry
        owner = read_owner(path)
        if not path.exists():
            return entry if entry.exists() else None
        if is_stale(path, owner):
            take_over(path, owner)
            return entry if entry.exists() else None
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(POLL_S)


@contextlib.contextmanager
def claimed(entry: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[Path | None]:
    """Yields ``entry`` when it exists (perhaps written by another worker while this one waited), else
    None while this process holds its claim: compute and write it, the claim is released at the end."""
    while True:
        if entry.exists():
            yield entry
            return
        claim = try_claim(entry)
        if claim is not None:
            break
        if wait_free(entry, on_wait=on_wait) is not None:
            continue
    try:
        yield entry if entry.exists() else None
    finally:
        claim.release()


def fill(entries: Sequence[Path], todo: Sequence[int], compute: Callable[[list[int]], None],
         load: Callable[[int, Path], None], *, on_wait: Callable[[], None] | None = None) -> None:
    """Fill the missing entries ``entries[i]`` for ``i`` in ``todo``: this process claims what it can,
    ``compute``s those indices together (writing their entries) and releases them; then it waits for
    the entries other workers hold and ``load``s them (those whose owner gave up go round again).
    Claims are released before any wait, so two workers never wait on each other."""
    todo = list(todo)
    while todo:
        held: dict[int, Claim] = {}
        others: list[int] = []
        ready: list[int] = []
        try:
            for i in todo:
                claim = try_claim(entries[i]) if not entries[i].exists() else None
                if claim is not None and not entries[i].exists():
                    held[i] = claim
                    continue
                if claim is not None:
                    claim.release()
                (ready if entries[i].exists() else others).append(i)
            if held:
                compute(sorted(held))
        finally:
            for claim in held.values():
                claim.release()
        for i in ready:
            load(i, entries[i])
        todo = []
        for i in others:
            path = wait_free(entries[i], on_wait=on_wait)
            if path is None:
                todo.append(i)
            else:
                load(i, path)


class _Heartbeat:
    """Refreshes (touches) the claims this process holds, so that a long computation's claim stays fresh."""

    def __init__(self) -> None:
        self.claims: dict[int, Claim] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, claim: Claim) -> None:
        with self.lock:
            self.claims[id(claim)] = claim
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="moduseg-claims", daemon=True)
                self.thread.start()

    def drop(self, claim: Claim) -> None:
        with self.lock:
            self.claims.pop(id(claim), None)

    def _run(self) -> None:
        while True:
            time.sleep(stale_after() / 4)
            with self.lock:
                held = list(self.claims.values())
            for claim in held:
                if read_owner(claim.path).get("token") == claim.token:
                    with contextlib.suppress(OSError):
                        os.utime(claim.path)


_HEARTBEAT = _Heartbeat()
