"""The one proposal file format (docs/formats.md): ``.npz`` with ``packed`` (``np.packbits`` of the
flattened bool ``N×H×W`` masks), ``shape`` (N, H, W) and ``scores`` (float32 N).

The ``precomputed`` proposer reads and writes it (its reader also takes plain ``masks`` and PNG
instance maps) and the cache's ``proposals`` stage stores its entries in it; both go through
:func:`write_packed` and :func:`unpack_all` so that the bytes on disk mean the same thing everywhere.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from moduseg_core.contract.types import Proposals


def packed_size(shape: tuple[int, int, int]) -> int:
    """Bytes of ``packed`` for masks of ``shape`` (N, H, W)."""
    return (shape[0] * shape[1] * shape[2] + 7) // 8


def write_packed(handle: BinaryIO, proposals: Proposals) -> None:
    """Write ``proposals`` to an open binary file as ``packed`` + ``shape`` + ``scores`` (compressed ``.npz``)."""
    masks = np.asarray(proposals.masks, dtype=bool)
    np.savez_compressed(
        handle,
        packed=np.packbits(masks.reshape(-1)),
        shape=np.asarray(masks.shape, dtype=np.int64),
        scores=np.asarray(proposals.scores, dtype=np.float32),
    )


def unpack_all(packed: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``bool N×H×W`` masks from ``packed`` (the caller has checked ``packed.size == packed_size(shape)``)."""
    return np.unpackbits(packed, count=shape[0] * shape[1] * shape[2]).view(bool).reshape(shape)


def unpack_one(packed: np.ndarray, shape: tuple[int, int, int], i: int) -> np.ndarray:
    """Mask ``i`` alone (``bool H×W``), without unpacking the others (a huge photo's proposals never
    exist at full size together)."""
    area = shape[1] * shape[2]
    first, last = i * area, (i + 1) * area
    bits = np.unpackbits(packed[first // 8 : (last + 7) // 8])[first % 8 : first % 8 + area]
    return bits.view(bool).reshape(shape[1:])
