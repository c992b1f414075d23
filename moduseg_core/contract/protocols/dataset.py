"""Dataset: the samples of one split and the class names.

Optional: ``has_background`` (bool, default True when absent). A dataset whose masks never hold
class 0 (ADE20K, Cityscapes: no background class) sets it False, and evaluation then leaves class 0
out of the mIoU (``runner.score_rules``; docs/datasets.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from moduseg_core.contract.types import Sample


@runtime_checkable
class Dataset(Protocol):
    #: Class names, index 0 is background.
    class_names: list[str]
    #: Which split this instance serves (``train``, ``val``...).
    split: str

    def __iter__(self) -> Iterator[Sample]:
        ...

    def __len__(self) -> int:
        ...
