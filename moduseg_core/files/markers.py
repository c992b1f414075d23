"""The marker of an output folder (``.moduseg-output.json``): reading it, telling whether the process that writes
the folder still runs, refusing to read an interrupted job's output (``files/outputs.py`` writes it)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from moduseg_core.contract.errors import ModusegError

MARKER = ".moduseg-output.json"
FORMAT = "moduseg-output"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of ``folder`` (None when it has none; a damaged one reads as an empty dict)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot, from /proc), to tell a live writer
    from a later process that was given the same id; None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def marker_in_use(marker: dict[str, Any] | None) -> int | None:
    """The id of the live process writing the folder of ``marker`` on this machine, else None."""
    if not marker or marker.get("state") != "incomplete":
        return None
    pid, host = marker.get("pid"), marker.get("host")
    if not isinstance(pid, int) or host != socket.gethostname() or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass  # another user's process: alive
    started = marker.get("process")
    if started is not None and _process_start(pid) not in (None, started):
        return None  # the id now belongs to another process: the writer is gone
    return pid


def check_complete(folder: Path, what: str) -> None:
    """Refuse to read the output of a job that was interrupted (its marker says incomplete)."""
    marker = read_marker(folder)
    if marker and marker.get("state") == "incomplete":
        pid = marker_in_use(marker)
        state = f"is still being written by process {pid}" if pid else "was interrupted before it finished"
        raise ModusegError(
            f"{what} {folder} {state} (its {MARKER} says incomplete); rerun `moduseg {marker.get('command')}` "
            "into it, or use a finished output"
        )
