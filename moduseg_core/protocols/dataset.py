"""Dataset: the samples of one split and the class names."""

from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

from ..types import Sample


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
