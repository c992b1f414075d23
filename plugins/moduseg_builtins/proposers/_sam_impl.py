"""``SamProposer``: segment-anything's ``SamAutomaticMaskGenerator`` behind the MaskProposer protocol.

The model is built once (``sam_model_registry[model_type]``) and its checkpoint loaded with
``torch.load(map_location="cpu", weights_only=True)``, so a checkpoint saved on a GPU loads on a
CPU and nothing in it is executed. Checkpoints named by URL go through torch.hub's download
helper into ``torch.hub.get_dir()/checkpoints`` and are reused from there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from moduseg_core import ModusegError

from .._shared import resolve_device
from ._fast_amg import GeneratorProposer
from ._torch_common import hub_download, load_every_key, mask_generator, read_state_dict
from .sam import CHECKPOINT_URLS, SamOptions

#: Image-encoder width → model type (to tell users which model_type a checkpoint fits).
_WIDTH_TO_TYPE = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def resolve_checkpoint(model_type: str, checkpoint: str | None) -> Path:
    source = checkpoint or CHECKPOINT_URLS[model_type]
    if "://" in source:
        return hub_download(source, "SAM checkpoint")
    path = Path(source).expanduser()
    if not path.is_file():
        raise ModusegError(
            f"SAM checkpoint {source!r} does not exist; pass an existing .pth file, a URL, or leave checkpoint "
            f"unset for Meta's {model_type} checkpoint ({CHECKPOINT_URLS[model_type]})"
        )
    return path


def load_sam(model_type: str, checkpoint: str | None) -> torch.nn.Module:
    """``sam_model_registry[model_type]`` with the checkpoint's weights (strict: every key must match)."""
    from segment_anything import sam_model_registry

    path = resolve_checkpoint(model_type, checkpoint)
    state = read_state_dict(path, "SAM checkpoint")
    model = sam_model_registry[model_type]()
    hint = ""
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is not None and int(weight.shape[0]) in _WIDTH_TO_TYPE:
        hint = f" (its image encoder is {_WIDTH_TO_TYPE[int(weight.shape[0])]})"
    load_every_key(
        model, state, mismatch=f"SAM checkpoint {path} does not fit model_type={model_type!r}{hint}",
        fix="set --set proposer.model_type=vit_b|vit_l|vit_h to match it",
    )
    return model


class SamProposer(GeneratorProposer):
    """Class-agnostic SAM masks; ``model`` may be passed in (an already built ``segment_anything.Sam``)."""

    name = "sam"

    def __init__(self, options: SamOptions, model: torch.nn.Module | None = None):
        from segment_anything import SamAutomaticMaskGenerator

        self.options = options
        self.device = resolve_device(options.device, f"proposer {self.name!r}")
        if model is None:
            model = load_sam(options.model_type, options.checkpoint)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.generator = mask_generator(SamAutomaticMaskGenerator, self.model, options, self.name)
        self._engine(sam2=False)

    def __repr__(self) -> str:
        return (
            f"SamProposer(model_type={self.options.model_type!r}, points_per_side={self.options.points_per_side}, "
            f"device={self.device})"
        )
