"""Light pieces shared by the foundation-model proposers (sam, sam2, eomt, mask2former, entityseg).

Only pydantic here: the options modules import this, and ``moduseg plugins list`` must not pay
for torch. The torch side lives in ``_torch_common``; the device/dtype types, image checks and
short errors are the package-wide ones of ``moduseg_builtins._shared``.
"""

from __future__ import annotations

from pydantic import Field

DEVICE_FIELD_DESCRIPTION = "torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps"
DTYPE_FIELD_DESCRIPTION = (
    "compute precision: float32, or bfloat16/float16 (autocast for SAM/SAM 2/EntitySeg/Mask2Former, weights "
    "cast for EoMT); masks and scores are returned as bool and float32 either way"
)


def device_field() -> object:
    return Field("auto", description=DEVICE_FIELD_DESCRIPTION)


def dtype_field() -> object:
    return Field("float32", description=DTYPE_FIELD_DESCRIPTION)
