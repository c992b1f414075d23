"""Bank indexes: ``exact`` (numpy, or torch on a GPU) and ``faiss`` (``IndexFlatIP``).

Both are exact inner-product top-k (METHOD.md, inference step 3) and give the same
neighbours in the same order: similarity descending, ties to the lower bank row.
This module is light; numpy, torch and faiss work lives in ``_index_impl`` and is
imported by the factories.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from moduseg_core import Options, hookimpl

_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


class ExactOptions(Options):
    device: str = Field(
        "cpu",
        description="'cpu' = numpy; 'cuda'/'cuda:N' = torch on that GPU; 'auto' = a GPU if torch sees one, else numpy",
    )
    chunk: int = Field(4096, ge=1, description="queries scored per block (fewer when the bank is very large)")

    runtime_fields = frozenset({"device", "chunk"})

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"device must be 'cpu', 'auto', 'cuda' or 'cuda:N', not {value!r}")
        return value


class FaissOptions(Options):
    gpu: Literal["auto", "never", "always"] = Field(
        "auto", description="auto = a GPU index when faiss sees a GPU; always = refuse to run without one"
    )

    runtime_fields = frozenset({"gpu"})


def make_exact(options: ExactOptions):
    from ._index_impl import ExactIndex

    return ExactIndex(options)


def make_faiss(options: FaissOptions):
    from ._index_impl import FaissIndex

    return FaissIndex(options)


@hookimpl
def register_indexes(register):
    register("exact", make_exact, options=ExactOptions, summary="Exact inner-product top-k (numpy; torch on a GPU)")
    register(
        "faiss",
        make_faiss,
        options=FaissOptions,
        summary="faiss IndexFlatIP: exact inner-product top-k, GPU when available",
        extra="faiss",
        requires=("faiss",),
    )
