"""What every kind of built-in component shares: the ``device`` and ``dtype`` options, image checks, short errors.

Light on purpose: the kind packages import it for their options while registering, so torch is
imported only inside ``resolve_device``, ``resolve_gpu_choice`` and ``torch_dtype``, which run
when a component is built.

``device`` — one option type, :data:`Device`, for every component: ``auto``, ``cpu``, ``mps``,
``cuda`` or ``cuda:N``. Its meaning depends on what the component runs:

* torch models (encoders, the ``clip`` labeler, the foundation-model proposers):
  :func:`resolve_device` — ``auto`` = CUDA when torch sees a GPU, else CPU;
* numpy with an optional GPU path (the ``exact`` index, the ``soft``/``hard`` aggregators):
  :func:`resolve_gpu_choice` — ``cpu`` = numpy, ``cuda``/``cuda:N`` = torch on that GPU,
  ``auto`` = a GPU when torch sees one, else numpy; ``mps`` is refused there.
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator

from moduseg_core import ModusegError

if TYPE_CHECKING:
    import torch

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(value: str) -> str:
    """pydantic validator body: refuse strings that cannot name a device."""
    if not _DEVICE.match(value):
        raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, not {value!r}")
    return value


#: the ``device`` option's type for every built-in component (checked on validation)
Device = Annotated[str, AfterValidator(check_device)]

#: the ``dtype`` option's type: the compute precision of a torch model
Dtype = Literal["float32", "bfloat16", "float16"]


def torch_dtype(name: str) -> torch.dtype:
    """A :data:`Dtype` name → the torch dtype (imports torch)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def resolve_device(device: str, what: str) -> torch.device:
    """The torch device a model runs on. ``what`` names the component in errors (``encoder 'dinov2'``):
    ``auto`` → CUDA when this torch sees a GPU, else CPU; an explicit CUDA or MPS device must be usable."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ModusegError(
            f"{what} option device={device!r} is not a torch device (use auto, cpu, cuda, cuda:N or mps)"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModusegError(
            f"{what} option device={device!r} asks for CUDA, which this torch cannot use; set device=auto or cpu"
        )
    if resolved.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ModusegError(
            f"{what} option device={device!r} asks for MPS, which this torch cannot use; set device=auto or cpu"
        )
    return resolved


def resolve_gpu_choice(device: str, what: str) -> str | None:
    """For components that run with numpy or on a GPU: None = run with numpy; otherwise the torch
    CUDA device to run on. ``what`` names the component in errors (``index 'exact'``)."""
    if device == "cpu":
        return None
    if device == "mps":
        raise ModusegError(
            f"{what} option device='mps' is not supported: it runs with numpy (cpu) or torch on CUDA; "
            "set device=cpu, auto, cuda or cuda:N"
        )
    if importlib.util.find_spec("torch") is None:
        if device == "auto":
            return None
        raise ModusegError(
            f"{what} option device={device!r} needs torch, which is not installed; "
            "install it with: pip install 'moduseg[transformers]', or set device=cpu"
        )
    import torch

    if not torch.cuda.is_available():
        if device == "auto":
            return None
        raise ModusegError(
            f"{what} option device={device!r} but torch sees no CUDA GPU "
            "(torch.cuda.is_available() is False); set device=cpu or auto"
        )
    target = "cuda" if device == "auto" else device
    gpus = torch.cuda.device_count()
    if ":" in target and int(target.split(":")[1]) >= gpus:
        raise ModusegError(
            f"{what} option device={device!r} names a GPU that does not exist "
            f"(torch sees {gpus}); use device=cuda or one of cuda:0..cuda:{gpus - 1}"
        )
    return target


def check_image(image: Any, what: str, *, cast: bool = False) -> np.ndarray:
    """A ``uint8 H×W×3`` RGB image, C-contiguous and writable (torch wants writable buffers).

    ``what`` names the component in errors (``proposer 'sam'``). ``cast=True`` clips and casts
    another dtype to uint8 instead of refusing it."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ModusegError(
            f"{what} got an image of shape {getattr(image, 'shape', None)}; expected uint8 H×W×3 RGB "
            "(read it with moduseg_core.files.io.read_image)"
        )
    if image.dtype != np.uint8:
        if not cast:
            raise ModusegError(
                f"{what} got an image of dtype {image.dtype}; expected uint8 H×W×3 RGB "
                "(read it with moduseg_core.files.io.read_image)"
            )
        image = np.clip(image, 0, 255).astype(np.uint8)
    if not (image.flags.c_contiguous and image.flags.writeable):
        image = np.array(image, order="C")
    return image


def short_reason(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line (for the middle of a one-line ModusegError)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
