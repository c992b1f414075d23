"""Small frozen result types passed between components.

Every array is a numpy array (a proposer's masks may also stay a device tensor: ``Proposals``);
shapes and dtypes are checked on construction so a
plugin that returns the wrong thing fails at its own boundary, with its own name
in the message, instead of deep inside the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IGNORE_INDEX = 255
BACKGROUND = 0


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class Proposals:
    """Class-agnostic masks for one image.

    masks: ``bool N×H×W``; scores: ``float32 N`` (the proposer's confidence).

    A proposer that runs on a GPU may hand over its masks as they are, a torch ``bool`` tensor on its
    device: they stay there (``device_masks``) through the stages that work on the device — the area
    check, ``select``, and pooling by an aggregator that takes device masks (``Aggregator``) — and are
    copied to the host once, the first time ``masks`` is read, by then only the masks that survived.
    The core does not import torch: a device tensor is recognised by its dtype, ``torch.bool``.
    """

    __slots__ = ("_host", "_device", "_scores")

    def __init__(self, masks: Any, scores: np.ndarray):
        self._host: np.ndarray | None
        self._device: Any  # a torch.Tensor, or None when the masks live on the host
        if isinstance(masks, np.ndarray):
            _check(masks.ndim == 3, f"Proposals.masks must be N×H×W, got shape {masks.shape}")
            _check(masks.dtype == np.bool_, f"Proposals.masks must be bool, got {masks.dtype}")
            self._host, self._device = masks, None
        else:
            _check(
                str(getattr(masks, "dtype", None)) == "torch.bool",
                f"Proposals.masks must be a bool numpy array or torch tensor, got {type(masks).__name__} "
                f"of dtype {getattr(masks, 'dtype', None)}",
            )
            _check(len(masks.shape) == 3, f"Proposals.masks must be N×H×W, got shape {tuple(masks.shape)}")
            self._host, self._device = None, masks
        n = self.shape[0]
        _check(scores.shape == (n,), f"Proposals.scores must have shape ({n},), got {scores.shape}")
        _check(scores.dtype == np.float32, f"Proposals.scores must be float32, got {scores.dtype}")
        self._scores = scores

    @property
    def masks(self) -> np.ndarray:
        """``bool N×H×W`` on the host (a device tensor is copied on the first read)."""
        if self._host is None:
            self._host = np.ascontiguousarray(self._device.cpu().numpy())
        return self._host

    @property
    def device_masks(self) -> Any:
        """The masks as the proposer's device tensor, or None when they were given as a numpy array."""
        return self._device

    @property
    def scores(self) -> np.ndarray:
        return self._scores

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N, H, W)`` without copying anything."""
        n, height, width = (self._host if self._host is not None else self._device).shape
        return int(n), int(height), int(width)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        n, height, width = self.shape
        where = "" if self._device is None else f", on {self._device.device}"
        return f"Proposals({n} masks of {height}×{width}{where})"

    def __reduce__(self) -> tuple:  # pickled (Ray, processes) with host masks
        return Proposals, (self.masks, self.scores)

    def areas(self) -> np.ndarray:
        """``int64 N``: pixels per mask, counted where the masks are."""
        if self._device is not None:
            return self._device.sum(dim=(1, 2)).cpu().numpy().astype(np.int64, copy=False)
        return self.masks.sum(axis=(1, 2), dtype=np.int64)  # on the host: masks is _host

    def select(self, keep: np.ndarray) -> Proposals:
        """The proposals at ``keep`` (a bool mask or indices), where the masks are; all of them is ``self``."""
        keep = np.asarray(keep)
        if keep.dtype == np.bool_ and keep.all() and len(keep) == len(self):
            return self
        if self._device is not None:
            import torch  # (already loaded: it made the tensor)

            return Proposals(self._device[torch.as_tensor(keep, device=self._device.device)], self._scores[keep])
        if keep.dtype != np.bool_:  # np.take: a fancy index along the first axis of a bool stack is ~3× slower
            return Proposals(np.take(self.masks, keep, axis=0), self._scores[keep])
        return Proposals(self.masks[keep], self._scores[keep])

    @classmethod
    def empty(cls, height: int, width: int) -> Proposals:
        return cls(np.zeros((0, height, width), bool), np.zeros((0,), np.float32))


@dataclass(frozen=True)
class Geometry:
    """How image pixels map onto the patch grid.

    The image (``image_hw``) was resized to ``resized_hw`` and then zero-padded at
    the bottom/right to ``padded_hw``, a multiple of ``patch_size``. Patch (i, j)
    covers rows ``[i·p, (i+1)·p)`` and columns ``[j·p, (j+1)·p)`` of the padded
    image. With no resize, ``resized_hw == image_hw``.
    """

    image_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    padded_hw: tuple[int, int]
    patch_size: int

    def __post_init__(self) -> None:
        p = self.patch_size
        _check(p > 0, f"patch_size must be positive, got {p}")
        _check(
            self.padded_hw[0] % p == 0 and self.padded_hw[1] % p == 0,
            f"padded size {self.padded_hw} is not a multiple of the patch size {p}",
        )
        _check(
            self.resized_hw[0] <= self.padded_hw[0] and self.resized_hw[1] <= self.padded_hw[1],
            f"resized size {self.resized_hw} exceeds the padded size {self.padded_hw}",
        )

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.padded_hw[0] // self.patch_size, self.padded_hw[1] // self.patch_size

    @classmethod
    def native(cls, height: int, width: int, patch_size: int) -> Geometry:
        """The paper's policy: native size, zero-padded to the patch multiple."""
        return cls.resized(height, width, height, width, patch_size)

    @classmethod
    def resized(cls, height: int, width: int, new_h: int, new_w: int, patch_size: int) -> Geometry:
        ph = -(-new_h // patch_size) * patch_size
        pw = -(-new_w // patch_size) * patch_size
        return cls((height, width), (new_h, new_w), (ph, pw), patch_size)


@dataclass(frozen=True)
class FeatureMap:
    """Dense patch tokens of one image: ``float32 h×w×C`` on ``geometry.grid_hw``."""

    tokens: np.ndarray
    geometry: Geometry

    def __post_init__(self) -> None:
        _check(self.tokens.ndim == 3, f"FeatureMap.tokens must be h×w×C, got shape {self.tokens.shape}")
        _check(
            self.tokens.shape[:2] == self.geometry.grid_hw,
            f"FeatureMap.tokens grid {self.tokens.shape[:2]} does not match the geometry's {self.geometry.grid_hw}",
        )
        _check(self.tokens.dtype == np.float32, f"FeatureMap.tokens must be float32, got {self.tokens.dtype}")

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[2])


@dataclass(frozen=True)
class Sample:
    """One dataset item. ``labels`` are the image-level class ids (background excluded)."""

    id: str
    image_path: Path
    labels: tuple[int, ...] = ()
    mask_path: Path | None = None


@dataclass(frozen=True)
class SearchResult:
    """Top-k neighbours: ``similarities float32 Q×k`` (descending) and ``labels int32 Q×k``; ``rows`` (int Q×k,
    optional) are the neighbours' bank rows, for an index that can say them (the built-in ones do): the
    evidence of ``--explain`` names them."""

    similarities: np.ndarray
    labels: np.ndarray
    rows: np.ndarray | None = None

    def __iter__(self) -> Iterator[np.ndarray]:  # allows ``sims, labels = index.search(...)``
        yield self.similarities
        yield self.labels


class Prediction:
    """The result of inference on one image: the class map and the masks that painted it.

    ``masks`` (bool K×H×W, the masks kept by NMS) is built when first read: inference hands
    over all its masks and the kept rows (``kept``), so a run that only needs the class map
    never copies them. When the decisions ran on the proposer's device (``method/nms_device.py``), the
    masks stay there and only the kept rows are copied on that first read. For an image over
    ``method.work_pixels`` the masks have its working size (``method/scale.py``) while ``semantic``
    has the image's.
    """

    __slots__ = ("semantic", "labels", "scores", "_source", "_kept", "_masks", "evidence")

    def __init__(
        self,
        semantic: np.ndarray,
        masks: Any,
        labels: np.ndarray,
        scores: np.ndarray,
        *,
        kept: np.ndarray | None = None,
        evidence: Any = None,
    ):
        self.semantic = semantic  # uint8/int32 H×W class map
        self.labels = labels  # int32 K
        self.scores = scores  # float32 K
        self._source = masks
        self._kept = kept
        self._masks = masks if kept is None else None
        #: why each mask got its label (``pipeline/evidence.py``), when the predictor was asked to explain
        self.evidence = evidence
        _check(len(labels) == len(scores), f"Prediction has {len(labels)} labels but {len(scores)} scores")

    @property
    def masks(self) -> np.ndarray:
        """bool K×H×W: the kept masks, in the order of ``labels`` / ``scores``."""
        if self._masks is None:
            assert self._kept is not None  # _masks is only None when kept was given
            if isinstance(self._source, np.ndarray):
                self._masks = np.take(self._source, self._kept, axis=0)
            else:  # a device tensor (decisions made on the device): only the kept rows are copied
                import torch  # (already loaded: it made the tensor)

                rows = torch.as_tensor(self._kept, device=self._source.device)
                self._masks = np.ascontiguousarray(self._source[rows].cpu().numpy())
        elif not isinstance(self._masks, np.ndarray):
            self._masks = np.ascontiguousarray(self._masks.cpu().numpy())
        return self._masks

    def __repr__(self) -> str:
        return f"Prediction(semantic={self.semantic.shape}, masks={len(self.labels)})"
