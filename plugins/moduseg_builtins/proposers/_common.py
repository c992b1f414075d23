"""Light pieces shared by the foundation-model proposers (sam, sam2, eomt, mask2former, entityseg).

Only pydantic and numpy here: the entry-point modules import this, and ``moduseg plugins list``
must not pay for torch. The torch side lives in ``_torch_common``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, Field

from moduseg_core import ModusegError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

DEVICE_FIELD_DESCRIPTION = "torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps"
DTYPE_FIELD_DESCRIPTION = (
    "compute precision: float32, or bfloat16/float16 (autocast for SAM/SAM 2/EntitySeg/Mask2Former, weights "
    "cast for EoMT); masks and scores are returned as bool and float32 either way"
)

Dtype = Literal["float32", "bfloat16", "float16"]


def device_field() -> object:
    return Field("auto", description=DEVICE_FIELD_DESCRIPTION)


def dtype_field() -> object:
    return Field("float32", description=DTYPE_FIELD_DESCRIPTION)


def check_device(value: str) -> str:
    """pydantic validator body: refuse strings that cannot name a torch device."""
    if not _DEVICE.match(value):
        raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, not {value!r}")
    return value


#: the ``device`` option's type: a string that can name a torch device (checked on validation)
TorchDevice = Annotated[str, AfterValidator(check_device)]


def check_image(image: np.ndarray, name: str) -> np.ndarray:
    """``uint8 H×W×3`` RGB, C-contiguous and writable (torch wants writable buffers)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ModusegError(
            f"proposer {name!r} got an image of shape {getattr(image, 'shape', None)}; expected uint8 H×W×3 RGB "
            "(read it with moduseg_core.io.read_image)"
        )
    if image.dtype != np.uint8:
        raise ModusegError(
            f"proposer {name!r} got an image of dtype {image.dtype}; expected uint8 H×W×3 RGB "
            "(read it with moduseg_core.io.read_image)"
        )
    if not (image.flags.c_contiguous and image.flags.writeable):
        image = np.array(image, order="C")
    return image


def short_reason(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line (for one-line errors)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
