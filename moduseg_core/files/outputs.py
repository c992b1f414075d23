"""Output folders: a command writes only into a folder that is new, empty, or its own earlier output.

Every command that writes a folder (``build-bank``, ``run`` and ``demo``, ``predict``, ``ablate``,
``evaluate-labels --out``, ``bench --out``) marks it with ``.moduseg-output.json``::

    {"format": "moduseg-output", "command": "run", "state": "complete", "files": ["overlays/a.jpg", ...]}

``files`` lists what the command wrote, relative to the folder; an entry ending in ``/`` is a folder it
created and owns whole (a bank's ``index/``, a run's ``bank/``, a sweep's ``points/NAME/``). While the
command works the marker says ``"state": "incomplete"`` (with the writer's process id) and lists
everything it may write, so a killed job is recognised as such and its files as its own.

The rules (``OutputDir.check`` applies them before any model loads; nothing is written on refusal):

- a folder that does not exist, or is empty: written;
- an earlier output of the same command: written again; at the end, the files of the earlier output
  that this run did not write (predictions of images no longer in the run, an old ``errors.jsonl``)
  and temporaries of a killed writer are removed. Files the user added are kept;
- ``--overwrite`` lets a command replace the output of another moduseg command (only the files its
  marker lists are removed), and makes a rerun start from a clean folder;
- anything else is refused with one line: a file, a folder that cannot be written, a folder in use by
  a running moduseg process, a non-empty folder without a marker (``--overwrite`` never touches one).

A command that stops on an error after ``begin`` (an image it cannot read, a component that fails) but wrote
nothing leaves the disk as it found it (``abandon``): the folders it created go, an earlier output's marker is
put back as it was. Once it has written files, the incomplete marker stays beside them: that work is resumable
and its files are known to be moduseg's.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moduseg_core.contract.errors import ModusegError
from moduseg_core.files.io import (
    add_write_listener,
    atomic_path,
    remove_path,
    remove_write_listener,
    temp_writer_alive,
)
from moduseg_core.files.markers import (  # noqa: F401  (re-exported: outputs is where callers find them)
    FORMAT,
    MARKER,
    _process_start,
    check_complete,
    marker_in_use,
    read_marker,
)

#: Files an operating system's file manager drops into any folder it shows; they are left alone.
DESKTOP_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
#: ``demo`` writes a run folder: the two commands may rerun into each other's output.
SAME_OUTPUT = {"demo": "run"}


def output_kind(command: str) -> str:
    return SAME_OUTPUT.get(command, command)


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _listing(folder: Path, limit: int = 3) -> str:
    names = sorted(p.name for p in folder.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


class OutputDir:
    """The folder one command writes (see the module doc).

    ``check`` (no writes) → ``begin(planned)`` just before the first file → the command writes
    (files put in place by ``io.atomic_path`` are recorded; others with ``record``) → ``finish``.
    """

    def __init__(self, root: Path | str, command: str, *, overwrite: bool = False, option: str = "--out"):
        self.root = Path(root)
        self.command = command
        self.kind = output_kind(command)
        self.overwrite = overwrite
        self.option = option
        self._abs = os.path.abspath(self.root)
        self._previous: set[str] = set()
        self._planned: set[str] = set()
        self._written: set[str] = set()
        self._protected: list[str] = []
        self._lock = threading.Lock()
        self._started = False
        self._created: Path | None = None  # the outermost folder begin() created
        self._marker_before: bytes | None = None  # the marker as begin() found it

    def __repr__(self) -> str:
        return f"OutputDir({str(self.root)!r}, {self.command!r})"

    # -- before any work --------------------------------------------------------------------------

    def check(self) -> None:
        """Refuse, with one line, a folder this command may not write into. Writes nothing."""
        root, where = self.root, f"{self.option} {self.root}"
        if root.is_symlink() and not root.exists():
            raise ModusegError(f"{where} is a broken link; pass a folder path")
        if root.exists() and not root.is_dir():
            raise ModusegError(f"{where} is a file, not a folder; pass the path of a new or empty folder")
        if not root.exists():
            parent = self._existing_parent()
            if not parent.is_dir():
                raise ModusegError(f"{where} cannot be created: {parent} is a file, not a folder; pass another path")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ModusegError(
                    f"{where} cannot be created: {parent} is not writable; pass a folder you can write to"
                )
            return
        if not os.access(root, os.W_OK | os.X_OK):
            raise ModusegError(f"{where} is not writable; pass a folder you can write to")
        entries = [p for p in root.iterdir() if p.name not in DESKTOP_FILES]
        if not entries:
            return  # empty (a file manager's own metadata file does not count)
        marker = read_marker(root)
        if marker is None:
            raise ModusegError(
                f"{where} is not empty and was not written by moduseg (it holds {_listing(root)}); pass a new or "
                "empty folder (--overwrite never replaces files moduseg did not write)"
            )
        if not marker:
            raise ModusegError(
                f"{where} has a damaged {MARKER}, so moduseg cannot tell which of its files it wrote; "
                "pass a new or empty folder"
            )
        pid = marker_in_use(marker)
        if pid is not None:
            raise ModusegError(
                f"{where} is being written by moduseg process {pid} (still running); wait for it to finish "
                "or pass another folder"
            )
        theirs = str(marker.get("command"))
        if output_kind(theirs) != self.kind and not self.overwrite:
            raise ModusegError(
                f"{where} holds the output of `moduseg {theirs}`, not of `moduseg {self.command}`; pass another "
                f"folder, or add --overwrite to replace that output (only the files moduseg wrote there are removed)"
            )

    def _existing_parent(self) -> Path:
        parent = Path(self._abs).parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        return parent

    def protect(self, path: Path | str) -> None:
        """Never remove ``path`` (an input of this command that lies inside the folder)."""
        rel = self._relative(Path(path))
        if rel is not None:
            self._protected.append(rel.rstrip("/"))

    # -- writing -----------------------------------------------------------------------------------

    def begin(self, planned: Iterable[str] = ()) -> OutputDir:
        """Mark the folder incomplete, listing ``planned`` (relative paths, ``x/`` for a whole folder)
        besides the earlier output's files; remove temporaries a killed writer left. Call it just
        before the first file is written, after every check that can refuse the job."""
        self.check()
        marker = read_marker(self.root) or {}
        previous = {str(f) for f in marker.get("files", []) if isinstance(f, str) and _safe(f)}
        if self.overwrite and previous:
            self._remove(previous)  # a clean start: the earlier output goes first
            previous = set()
        self._previous = previous
        self._planned = {p for p in planned if _safe(p)}
        missing = [p for p in (Path(self._abs), *Path(self._abs).parents) if not p.exists()]
        self._created = missing[-1] if missing else None
        marker_path = self.root / MARKER
        self._marker_before = marker_path.read_bytes() if marker_path.is_file() else None
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_temporaries()
        self._write_marker("incomplete", sorted(self._previous | self._planned))
        add_write_listener(self._on_write)
        self._started = True
        with _open_lock:
            _open.append(self)
        return self

    def plan(self, entries: Iterable[str]) -> None:
        """Add entries to the planned list of a begun output (the marker is rewritten)."""
        new = {p for p in entries if _safe(p)} - self._planned
        if new:
            self._planned |= new
            self._write_marker("incomplete", sorted(self._previous | self._planned))

    def record(self, path: Path | str) -> None:
        """Note that this command wrote ``path`` (``io.atomic_path`` calls it for its files)."""
        rel = self._relative(Path(path))
        if rel is None or rel in ("", MARKER) or any(_is_temp(part) for part in rel.split("/")):
            return  # outside, the marker itself, or inside a temporary (e.g. a bank being staged)
        owner = self._owner(rel)
        with self._lock:
            self._written.add(owner)

    def _on_write(self, path: Path) -> None:
        self.record(path)

    def finish(self) -> None:
        """Remove this command's stale files (its earlier output's files not written this time) and
        mark the folder complete."""
        remove_write_listener(self._on_write)
        written = set(self._written)
        stale = (self._previous | self._planned) - written
        stale = {s for s in stale if not self._is_protected(s)}
        self._remove(stale)
        kept = {s for s in self._previous | self._planned if self._is_protected(s) and (self.root / s).exists()}
        self._write_marker("complete", sorted(written | kept))
        self._forget()

    def close(self) -> None:
        """Stop recording (the command failed): the marker stays incomplete."""
        remove_write_listener(self._on_write)
        self._forget()

    def abandon(self) -> None:
        """The command failed: stop recording and, if it wrote nothing here, leave the disk as ``begin`` found
        it (the marker put back or removed, the folders it created removed while empty). Files it wrote keep
        their incomplete marker: a rerun resumes or replaces them."""
        remove_write_listener(self._on_write)
        if self._started and not self._written:
            marker = self.root / MARKER
            if self._marker_before is not None:
                with atomic_path(marker) as tmp:
                    tmp.write_bytes(self._marker_before)
            else:
                remove_path(marker)
                self._remove_created()
        self._forget()

    def _remove_created(self) -> None:
        """Remove the folders ``begin`` created, innermost first, each only while empty: a file that someone
        else put there keeps its folder."""
        if self._created is None:
            return
        chain = [Path(self._abs), *Path(self._abs).parents]
        for folder in chain[: chain.index(self._created) + 1]:
            for item in list(folder.iterdir()) if folder.is_dir() else []:
                if _is_temp(item.name) and (f".{os.getpid()}-" in item.name or not temp_writer_alive(item.name)):
                    remove_path(item)  # a temporary of this failed command's own, or of a dead writer
            try:
                folder.rmdir()
            except OSError:
                return

    def _forget(self) -> None:
        self._started = False
        with _open_lock:
            if self in _open:
                _open.remove(self)

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abandon()
        else:
            self.close()

    # -- helpers -----------------------------------------------------------------------------------

    def _relative(self, path: Path) -> str | None:
        full = os.path.abspath(path)
        if full == self._abs:
            return ""
        if not full.startswith(self._abs + os.sep):
            return None
        return Path(os.path.relpath(full, self._abs)).as_posix()

    def _owner(self, rel: str) -> str:
        """A whole folder entry (``x/``) that holds ``rel``, else ``rel`` itself."""
        for entry in self._previous | self._planned:
            if entry.endswith("/") and (rel + "/" == entry or rel.startswith(entry)):
                return entry
        return rel

    def _is_protected(self, entry: str) -> bool:
        entry = entry.rstrip("/")
        return any(entry == p or entry.startswith(p + "/") or p.startswith(entry + "/") for p in self._protected)

    def _remove(self, entries: Iterable[str]) -> None:
        parents: set[Path] = set()
        for entry in sorted(entries):
            if self._is_protected(entry):
                continue
            path = self.root / entry.rstrip("/")
            if entry.endswith("/") and not (path.is_dir() and not path.is_symlink()):
                continue  # a folder entry is only ever a folder
            remove_path(path)
            parents.update(p for p in path.parents if p != self.root and self.root in p.parents)
        for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty: a user's files keep their folder
            except OSError:
                pass

    def _remove_temporaries(self) -> None:
        """Temporaries (``.NAME.PID-RANDOM.tmp``) beside the files this command owns, and anything
        temporary inside the folders it owns whole, left by a writer that no longer runs."""
        entries = self._previous | self._planned | {MARKER}
        folders: dict[Path, set[str]] = {}
        for entry in entries:
            path = self.root / entry.rstrip("/")
            folders.setdefault(path.parent, set()).add(path.name)
            if entry.endswith("/") and path.is_dir() and not path.is_symlink():
                for sub in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
                    folders.setdefault(sub, set()).add("*")
        for folder, names in folders.items():
            if not folder.is_dir():
                continue
            for item in list(folder.iterdir()):
                if not _is_temp(item.name):
                    continue  # (no live writer holds the folder: check() saw to it)
                stem = item.name[1:].rsplit(".", 2)[0]
                if "*" in names or stem in names or stem.startswith("bank_save"):
                    remove_path(item)

    def _write_marker(self, state: str, files: list[str]) -> None:
        data: dict[str, Any] = {"format": FORMAT, "command": self.kind, "state": state, "files": files}
        if state == "incomplete":
            data |= {"pid": os.getpid(), "host": socket.gethostname(), "process": _process_start(os.getpid())}
        with atomic_path(self.root / MARKER) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n")


#: Outputs begun and not yet finished, closed or abandoned (``abandon_open``).
_open: list[OutputDir] = []
_open_lock = threading.Lock()


def abandon_open() -> None:
    """Abandon every output a failed command left begun (the command line's error boundary calls it)."""
    with _open_lock:
        pending = list(reversed(_open))
    for output in pending:
        output.abandon()


def _safe(entry: str) -> bool:
    """A relative path inside the folder (a marker edited by hand cannot point outside it)."""
    parts = Path(entry.rstrip("/")).parts
    return bool(parts) and not Path(entry).is_absolute() and ".." not in parts and entry.rstrip("/") != MARKER


def prepare(
    root: Path | str | None, command: str, *, overwrite: bool = False, option: str = "--out"
) -> OutputDir | None:
    """``OutputDir(...).check()`` for a command's ``--out`` (None passes through)."""
    if root is None:
        return None
    out = OutputDir(root, command, overwrite=overwrite, option=option)
    out.check()
    return out
