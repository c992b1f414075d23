"""Bank indexes: ``exact`` (numpy, or torch on a GPU), ``faiss`` (flat or IVF) and ``hnswlib``.

``exact`` and ``faiss`` with ``type='flat'`` are exact inner-product top-k (METHOD.md,
inference step 3) and give the same neighbours in the same order: similarity
descending, ties to the lower bank row. ``faiss`` with ``type='ivf'`` and ``hnswlib``
are approximate: they return the same kind of result (sorted the same way among the
neighbours they find) but may miss some true neighbours.

This package is the ``indexes`` entry point: the options and the registration, light. One
module per backend, imported by the factories: ``_exact`` (numpy, or torch on a GPU),
``_faiss``, ``_hnsw``; ``_common`` holds the input checks, the top-k order and the saved layout
they share.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from moduseg_core import Options, hookimpl

from .._shared import Device


class ExactOptions(Options):
    device: Device = Field(
        "cpu",
        description="'cpu' = numpy; 'cuda'/'cuda:N' = torch on that GPU; 'auto' = a GPU if torch sees one, else numpy",
    )
    chunk: int = Field(4096, ge=1, description="queries scored per block (fewer when the bank is very large)")

    runtime_fields = frozenset({"device", "chunk"})



class FaissOptions(Options):
    type: Literal["flat", "ivf"] = Field(
        "flat",
        description="flat = IndexFlatIP (exact); ivf = IndexIVFFlat (approximate: k-means cells, `nprobe` searched), "
        "trained on the vectors added before the first search or save",
    )
    nlist: int | None = Field(
        None, ge=1, description="ivf: number of k-means cells; None = 4·sqrt(n), at most n/39 (faiss's guideline)"
    )
    nprobe: int = Field(32, ge=1, description="ivf: cells searched per query (more = better recall, slower)")
    gpu: Literal["auto", "never", "always"] = Field(
        "auto", description="auto = a GPU index when faiss sees a GPU; always = refuse to run without one"
    )

    runtime_fields = frozenset({"gpu"})


class HnswOptions(Options):
    space: Literal["ip", "cosine"] = Field(
        "ip", description="ip = inner product (the method's similarity); cosine = hnswlib normalises the vectors"
    )
    ef: int = Field(
        128, ge=1, description="search breadth per query (at least k is used); higher = better recall, slower"
    )
    M: int = Field(32, ge=2, description="graph links per node (build time; more = better recall, more memory)")
    ef_construction: int = Field(200, ge=1, description="search breadth while building the graph")
    seed: int = Field(100, ge=0, description="random seed of the graph's level assignment")
    threads: int = Field(0, ge=0, description="threads per search batch; 0 = all cores")
    build_threads: int = Field(
        1, ge=0, description="threads while adding; 1 = the same graph on every build, 0 = all cores (faster, varies)"
    )

    runtime_fields = frozenset({"threads", "build_threads"})


def make_exact(options: ExactOptions):
    from ._exact import ExactIndex

    return ExactIndex(options)


def make_faiss(options: FaissOptions):
    from ._faiss import FaissIndex

    return FaissIndex(options)


def make_hnswlib(options: HnswOptions):
    from ._hnsw import HnswIndex

    return HnswIndex(options)


@hookimpl
def register_indexes(register):
    register("exact", make_exact, options=ExactOptions, summary="Exact inner-product top-k (numpy; torch on a GPU)")
    register(
        "faiss",
        make_faiss,
        options=FaissOptions,
        summary="faiss IndexFlatIP (exact) or IndexIVFFlat (type=ivf, approximate), GPU when available",
        extra="faiss",
        requires=("faiss",),
    )
    register(
        "hnswlib",
        make_hnswlib,
        options=HnswOptions,
        summary="hnswlib HNSW graph: approximate inner-product top-k (CPU); exact brute force, with a warning, "
        "when the graph cannot return k neighbours",
        extra="hnswlib",
        requires=("hnswlib",),
    )
