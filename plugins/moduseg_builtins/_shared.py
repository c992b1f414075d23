"""``device`` of the components that run with numpy or on a GPU (the ``exact`` index, the
``soft``/``hard`` aggregators): 'cpu' = numpy, 'cuda'/'cuda:N' = torch on that GPU, 'auto' = a
GPU when torch sees one, else numpy.

Light on purpose: the entry-point modules import it for their validators; torch is imported
only by ``resolve_gpu_choice``.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Annotated

from pydantic import AfterValidator

from moduseg_core import ModusegError

_GPU_CHOICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def check_gpu_choice(value: str) -> str:
    """pydantic validator body for such a ``device`` option."""
    if not _GPU_CHOICE.match(value):
        raise ValueError(f"device must be 'cpu', 'auto', 'cuda' or 'cuda:N', not {value!r}")
    return value


#: the ``device`` option's type for such components (checked on validation)
GpuChoice = Annotated[str, AfterValidator(check_gpu_choice)]


def resolve_gpu_choice(device: str, what: str) -> str | None:
    """None = run with numpy; otherwise the torch CUDA device to run on. ``what`` names the
    component in errors (``index 'exact'``)."""
    if device == "cpu":
        return None
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
