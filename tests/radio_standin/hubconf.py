"""torch.hub entry point of the RADIO stand-in (tests only): ``radio_model(version=...)`` like NVlabs/RADIO's.

``version`` names a ``<version>.pth`` state dict next to this file (or is a checkpoint path).
"""

import os

dependencies = ["torch"]


def radio_model(version: str = "", progress: bool = True, adaptor_names=None, **kwargs):
    import torch
    from hf_model import RADIOBase

    here = os.path.dirname(os.path.abspath(__file__))
    path = version if os.path.isfile(version) else os.path.join(here, f"{version}.pth")
    if not os.path.isfile(path):
        raise ValueError(f"unknown version {version!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = RADIOBase()
    model.load_state_dict(state)
    # as NVlabs/RADIO's hubconf does: the model and its conditioner take the checkpoint's dtype
    dtype = state["model.patch_embed.weight"].dtype
    model.to(dtype=dtype)
    model.input_conditioner.dtype = dtype
    return model
