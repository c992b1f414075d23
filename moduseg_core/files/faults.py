"""Crash points for the kill -9 tests.

``MODUSEG_CRASH_AT=NAME[:N]`` makes the process kill itself with SIGKILL the N-th time (default: the
first) it reaches ``crash_point(NAME)``: no ``finally``, no atexit, exactly what ``kill -9`` leaves.
Unset (always, outside tests), a crash point costs one string comparison.

Points: ``bank-image`` (a bank image labelled and queued), ``bank-save-staged`` (every bank file
written to its temporary folder), ``bank-save-commit`` (the bank's vectors moved in, the rest not),
``prediction`` (a prediction PNG written), ``report`` (predictions done, report not yet written),
``ablate-point`` (a sweep point's results written), ``bank-collect`` (the driver recorded a finished
bank image), ``bank-worker`` (a Ray worker wrote a bank image's shard).

``MODUSEG_CRASH_ONCE=PATH`` makes the crash happen once across processes: the first process to
reach the point creates PATH and dies; later ones (a worker Ray restarted) go on.
"""

from __future__ import annotations

import os
import signal
import sys

_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("MODUSEG_CRASH_AT")
    if not spec:
        return
    want, _, nth = spec.partition(":")
    if want != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(nth or 1):
        once = os.environ.get("MODUSEG_CRASH_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
