"""One exception type for everything a user can fix.

Its message is one line: what is wrong (naming the bad value), what is allowed,
and how to fix it. The CLI prints it and exits with code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ModusegError(Exception):
    """A problem with the user's input, config, data or environment."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    match = closest(name, choices)
    return f"; did you mean {match!r}?" if match else ""
