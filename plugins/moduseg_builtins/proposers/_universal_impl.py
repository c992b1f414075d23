"""``UniversalProposer``: EoMT / Mask2Former (transformers) queries as class-agnostic proposals.

Preprocessing is done here in torch, following each model's own image processor:

* EoMT (panoptic/instance): the longer side is resized to the model's ``image_size``, the image
  is zero-padded at the bottom/right to a square (black pixels, padded before normalisation as
  ``EomtImageProcessor`` and the original code do), then normalised.
* Mask2Former: the shorter side is resized to ``shortest_edge`` with the longer side capped at
  ``longest_edge`` (detectron2's ``ResizeShortestEdge``), normalised, then zero-padded at the
  bottom/right to a multiple of ``size_divisor`` (32), as the original detectron2 Mask2Former does
  (``Mask2FormerImageProcessor`` instead rounds the resized size up to the multiple, stretching the image).

Mean, std, sizes and the divisor come from the checkpoint's ``preprocessor_config.json`` when it
has one (ImageNet statistics, 800/1333 and 32 otherwise). Mask logits are resized to the padded
input, cropped to the image's part, and resized to the image (bilinear) before thresholding.
See ``transformers_universal`` for the score.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from moduseg_core import ModusegError, Proposals

from .._shared import check_image, resolve_device, short_reason, torch_dtype
from ._torch_common import to_proposals

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: proposer name → accepted ``config.model_type`` → transformers class name.
MODEL_CLASSES = {
    "eomt": {"eomt": "EomtForUniversalSegmentation", "eomt_dinov3": "EomtDinov3ForUniversalSegmentation"},
    "mask2former": {"mask2former": "Mask2FormerForUniversalSegmentation"},
}
EXAMPLES = {
    "eomt": "tue-mps/coco_panoptic_eomt_large_640",
    "mask2former": "facebook/mask2former-swin-large-coco-panoptic",
}

#: Masks resized to the image per chunk of queries (bounds memory on large images).
_CHUNK = 16


def _looks_like_path(model: str) -> bool:
    if model.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in model:
        return True
    return model.count("/") > 1 or model in (".", "..")


def resolve_source(model: str, name: str) -> tuple[str, bool]:
    """What to hand ``from_pretrained``, and whether it is a local directory."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ModusegError(
                f"proposer {name!r} model {model!r} is not a checkpoint directory (no config.json in it); point model "
                f"at a folder written by save_pretrained, or give a hub id such as {EXAMPLES[name]!r}"
            )
        return str(path), True
    if _looks_like_path(model):
        raise ModusegError(
            f"proposer {name!r} model directory {model!r} does not exist; point model at a folder written by "
            f"save_pretrained, or give a hub id such as {EXAMPLES[name]!r}"
        )
    return model, False


def load_model(model: str, name: str) -> torch.nn.Module:
    import transformers
    from transformers import AutoConfig

    source, local = resolve_source(model, name)

    def failed(exc: BaseException) -> ModusegError:
        if local:
            return ModusegError(
                f"proposer {name!r} could not load the checkpoint directory {model!r} ({short_reason(exc)}); "
                "re-create it with save_pretrained"
            )
        return ModusegError(
            f"proposer {name!r} could not load {model!r} from the Hugging Face hub or its local cache "
            f"({short_reason(exc)}); on a connected machine run `hf download {model}` and copy the cache, or point "
            "model at a local checkpoint directory"
        )

    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:
        raise failed(exc) from exc
    accepted = MODEL_CLASSES[name]
    model_type = getattr(config, "model_type", "?")
    if model_type not in accepted:
        raise ModusegError(
            f"proposer {name!r} model {model!r} is a {model_type!r} checkpoint; it needs a "
            f"{' or '.join(accepted)} model such as {EXAMPLES[name]!r}"
        )
    cls = getattr(transformers, accepted[model_type], None)
    if cls is None:
        raise ModusegError(
            f"proposer {name!r}: transformers {transformers.__version__} has no {accepted[model_type]}; "
            "upgrade it with pip install -U transformers"
        )
    try:
        return cls.from_pretrained(source)
    except Exception as exc:
        raise failed(exc) from exc


def processor_settings(model: str, source_is_local: bool) -> dict[str, Any]:
    """The checkpoint's ``preprocessor_config.json`` as a dict; ``{}`` when the checkpoint has none
    (or, offline, the hub cache holds none): the documented defaults apply. A file that is there but
    cannot be read or parsed is an error, not a silent fallback to other normalisation statistics."""
    if source_is_local:
        path = Path(model).expanduser() / "preprocessor_config.json"
        if not path.exists():
            return {}
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError

        try:
            path = Path(hf_hub_download(repo_id=model, filename="preprocessor_config.json"))
        except EntryNotFoundError:  # not in the repository, or not in the cache when offline
            return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModusegError(
            f"preprocessor config {path} of model {model!r} is unreadable ({short_reason(exc)}); fix or delete it "
            "(without one the ImageNet defaults apply)"
        ) from exc
    if not isinstance(data, dict):
        raise ModusegError(
            f"preprocessor config {path} of model {model!r} holds a {type(data).__name__}, not a mapping of settings; "
            "fix or delete it"
        )
    return data


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


class UniversalProposer:
    """EoMT or Mask2Former, class-agnostic. ``name`` is ``"eomt"`` or ``"mask2former"``."""

    def __init__(self, options: Any, name: str, model: torch.nn.Module | None = None):
        if name not in MODEL_CLASSES:
            raise ValueError(f"unknown universal proposer {name!r}")
        self.name = name
        self.options = options
        self.device = resolve_device(options.device, f"proposer {name!r}")
        self.dtype = torch_dtype(options.dtype)
        # EoMT (a plain ViT) runs with its weights cast. Mask2Former's multi-scale deformable attention returns
        # NaN with bfloat16 weights (GPU check, Swin-L), so it keeps float32 weights and runs under autocast.
        self.cast = name == "eomt" or self.dtype == torch.float32
        settings: dict[str, Any] = {}
        if model is None:
            model = load_model(options.model, name)
            settings = processor_settings(*resolve_source(options.model, name))
        weights = self.dtype if self.cast else torch.float32
        self.model = model.eval().requires_grad_(False).to(device=self.device, dtype=weights)
        mean = settings.get("image_mean") or IMAGENET_MEAN
        std = settings.get("image_std") or IMAGENET_STD
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(3, 1, 1)
        size = settings.get("size") if isinstance(settings.get("size"), dict) else {}
        if name == "eomt":
            self.input_hw = _pair(self.model.config.image_size)
        else:
            shortest = getattr(options, "shortest_edge", None) or size.get("shortest_edge") or 800
            longest = getattr(options, "longest_edge", None) or size.get("longest_edge") or 1333
            self.shortest_edge, self.longest_edge = int(shortest), int(longest)
            self.size_divisor = int(settings.get("size_divisor") or 32)

    def __repr__(self) -> str:
        return (
            f"UniversalProposer({self.name}, model={self.options.model!r}, device={self.device}, "
            f"dtype={self.options.dtype})"
        )

    # -- preprocessing --------------------------------------------------------------------------------

    def resized_hw(self, height: int, width: int) -> tuple[int, int]:
        """The size the image is resized to before padding."""
        if self.name == "eomt":
            scale = min(self.input_hw[0] / height, self.input_hw[1] / width)
        else:
            scale = self.shortest_edge / min(height, width)
            if max(height, width) * scale > self.longest_edge:
                scale = self.longest_edge / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def padded_hw(self, resized: tuple[int, int]) -> tuple[int, int]:
        if self.name == "eomt":
            return self.input_hw
        d = self.size_divisor
        return -(-resized[0] // d) * d, -(-resized[1] // d) * d

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """uint8 H×W×3 → (1×3×ph×pw pixel values, resized size, padded size)."""
        image = check_image(image, f"proposer {self.name!r}")
        height, width = image.shape[:2]
        resized = self.resized_hw(height, width)
        padded = self.padded_hw(resized)
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1).to(torch.float32)[None]
        if resized != (height, width):
            x = F.interpolate(x, size=resized, mode="bilinear", align_corners=False, antialias=True)
        pad = (0, padded[1] - resized[1], 0, padded[0] - resized[0])
        if self.name == "eomt":  # black padding, then normalisation
            x = F.pad(x, pad, value=0.0)
            x = (x / 255.0 - self._mean) / self._std
        else:  # normalisation, then zero padding
            x = (x / 255.0 - self._mean) / self._std
            x = F.pad(x, pad, value=0.0)
        return x, resized, padded

    # -- MaskProposer ---------------------------------------------------------------------------------

    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Proposals:
        """Every query's mask whose score reaches ``score_threshold``; sorted by score."""
        return self.propose_batch([image], [image_id])[0]

    def propose_batch(
        self, images: Sequence[np.ndarray], image_ids: Sequence[str | None] | None = None
    ) -> list[Proposals]:
        """``propose`` for several images: images whose padded input sizes are equal (every image, for EoMT)
        share forward passes, ``batch_size`` at a time. Each image's proposals are those ``propose`` gives."""
        images = [check_image(image, f"proposer {self.name!r}") for image in images]
        prepared = [self.prepare(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (_, _, padded) in enumerate(prepared):
            groups.setdefault(padded, []).append(i)
        out: list[Proposals | None] = [None] * len(images)
        size = self.options.batch_size
        autocast = contextlib.nullcontext() if self.cast else torch.autocast(self.device.type, dtype=self.dtype)
        with torch.inference_mode():
            for members in groups.values():
                for start in range(0, len(members), size):
                    chunk = members[start : start + size]
                    pixels = torch.cat([prepared[i][0] for i in chunk])
                    with autocast:
                        output = self.model(pixel_values=pixels.to(self.dtype if self.cast else torch.float32))
                    for row, i in enumerate(chunk):
                        _, resized, padded = prepared[i]
                        out[i] = self._proposals(
                            output.class_queries_logits[row].float(), output.masks_queries_logits[row].float(),
                            images[i].shape[:2], resized, padded,
                        )
        return out  # type: ignore[return-value]

    def _proposals(
        self, class_logits: torch.Tensor, mask_logits: torch.Tensor, image_hw: tuple[int, int],
        resized: tuple[int, int], padded: tuple[int, int],
    ) -> Proposals:
        """One image's queries (``Q×(C+1)`` class logits, last = no object; ``Q×h×w`` mask logits) → proposals."""
        height, width = image_hw
        threshold = self.options.score_threshold
        class_score = class_logits.softmax(-1)[:, :-1].max(-1).values
        # score = class_score × mean mask probability ≤ class_score: skip queries that cannot reach it
        candidates = torch.nonzero(class_score >= threshold).flatten()
        masks, scores = [], []
        for start in range(0, len(candidates), _CHUNK):
            chunk = candidates[start : start + _CHUNK]
            logits = F.interpolate(mask_logits[chunk][None], size=padded, mode="bilinear", align_corners=False)[0]
            logits = logits[:, : resized[0], : resized[1]]
            if resized != (height, width):
                logits = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            probability = logits.sigmoid()
            inside = probability > self.options.mask_threshold
            area = inside.sum(dim=(1, 2))
            mask_score = (probability * inside).sum(dim=(1, 2)) / area.clamp(min=1)
            score = class_score[chunk] * mask_score
            keep = (area > 0) & (score >= threshold)
            masks.append(inside[keep])  # (kept on the device: Proposals.device_masks)
            scores.append(score[keep].cpu().numpy())
        if not masks:
            return Proposals.empty(height, width)
        return to_proposals(torch.cat(masks), np.concatenate(scores), (height, width))
