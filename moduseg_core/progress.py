"""Progress bars on stderr: live on a terminal, a line every few seconds in logs."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "") -> Iterable[T]:
    if os.environ.get("MODUSEG_PROGRESS", "1") == "0":
        return items
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(
        items,
        total=total,
        desc=desc,
        file=sys.stderr,
        unit="img",
        mininterval=0.2 if tty else 15.0,
        dynamic_ncols=tty,
        leave=True,
    )
