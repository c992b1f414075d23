"""Progress bars on stderr: live on a terminal, a line every few seconds in logs.

A bar counts an item when the item is done, so a finished job's bar ends at N/N. Messages printed
while bars are open go above them (``note``); the CLI closes every open bar before it prints an
error (``close_all``), so an error line is never glued onto a bar or redrawn over.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_open: list[Bar] = []
_lock = threading.Lock()


class Bar:
    """A progress bar of ``total`` items; ``update`` counts finished ones. A context manager."""

    def __init__(self, total: int | None, desc: str = ""):
        self._bar = None
        if os.environ.get("MODUSEG_PROGRESS", "1") != "0":
            from tqdm import tqdm

            tty = sys.stderr.isatty()
            self._bar = tqdm(
                total=total,
                desc=desc,
                file=sys.stderr,
                unit="img",
                mininterval=0.2 if tty else 15.0,
                dynamic_ncols=tty,
                leave=True,
            )
            with _lock:
                _open.append(self)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        """Print the bar's last state and end its line (idempotent)."""
        bar, self._bar = self._bar, None
        if bar is None:
            return
        with _lock:
            if self in _open:
                _open.remove(self)
        bar.close()

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "") -> Iterator[T]:
    """Iterate ``items`` with a bar that counts an item once the loop body is done with it."""
    bar = Bar(total, desc)
    try:
        for item in items:
            yield item
            bar.update()
    finally:
        bar.close()


def close_all() -> None:
    """Close every open bar (before an error is printed)."""
    with _lock:
        bars = list(_open)
    for bar in reversed(bars):
        bar.close()


def note(message: str) -> None:
    """One line on stderr, above any open bar."""
    with _lock:
        active = bool(_open)
    if active:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
