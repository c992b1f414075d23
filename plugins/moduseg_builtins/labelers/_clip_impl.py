"""``ClipLabeler``: dense open_clip logits on sliding windows (heavy imports live here).

Per image (docs/labelers.md has the rule in words):

1. resize so the shorter side is ``short_side``; normalise with the model's mean/std; zero-pad
   to at least one window;
2. windows of ``crop`` px every ``stride`` px (the last one flush with the edge, so every pixel
   is covered); per window, dense tokens from the last block (``dense``), projected to the joint
   space and L2-normalised; cosine with every prompt name's text embedding × ``logit_scale``;
3. a class's logit is the best of its names; background is the best of the stuff words; only the
   image's own labels and background are scored (the others are −∞ before the softmax);
4. window logits are upsampled bilinearly to the window, averaged where windows overlap, resized
   to the image, and the argmax is the map;
5. optionally every proposal of ``correct_with`` (score ≥ ``correct_min_score``) takes its
   majority class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from moduseg_core import ModusegError
from moduseg_core.contract.errors import did_you_mean
from moduseg_core.contract.types import Sample

from .._shared import check_image, resolve_device, short_reason, torch_dtype
from ._clip_text import IMAGENET_TEMPLATES, PROMPT_NAMES
from ._common import build_part, check_labels, majority_correct
from .clip import ClipLabelerOptions

NAME = "clip"
_SCHEMAS = ("hf-hub:", "local-dir:")


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of windows along one side: every ``stride``, the last flush with the end.

    ``length <= crop`` gives one window at 0 (the caller pads the image to the crop)."""
    if length <= crop:
        return [0]
    count = -(-(length - crop) // stride) + 1
    return [min(i * stride, length - crop) for i in range(count)]


def load_clip(model: str, pretrained: str | None, labeler: str = NAME) -> torch.nn.Module:
    """An open_clip CLIP model by architecture + tag/file, or from an ``hf-hub:``/``local-dir:`` source."""
    import open_clip

    kwargs = {}
    if model.startswith(_SCHEMAS):
        if model.startswith("local-dir:") and not Path(model[len("local-dir:"):]).expanduser().is_dir():
            raise ModusegError(
                f"labeler {labeler!r} model {model!r}: that folder does not exist; point local-dir: at a folder with "
                "open_clip_config.json and open_clip_pytorch_model.bin (or .safetensors)"
            )
        pretrained = None  # the source carries its own weights
    else:
        known = open_clip.list_models()
        if model not in known:
            raise ModusegError(
                f"labeler {labeler!r} model {model!r} is not an open_clip architecture{did_you_mean(model, known)} "
                "(see open_clip.list_models(); or use hf-hub:ORG/REPO or local-dir:PATH); fix --set labeler.model"
            )
        if pretrained is not None:
            tag = open_clip.get_pretrained_cfg(model, pretrained)
            if tag:
                kwargs["force_quick_gelu"] = bool(tag.get("quick_gelu", False))
            elif not Path(pretrained).expanduser().is_file():
                tags = open_clip.list_pretrained_tags_by_model(model)
                raise ModusegError(
                    f"labeler {labeler!r} pretrained={pretrained!r} is neither a tag of {model} "
                    f"(tags: {', '.join(tags) or 'none'}) nor a checkpoint file; fix --set labeler.pretrained"
                )
            else:
                pretrained = str(Path(pretrained).expanduser())
    try:
        loaded = open_clip.create_model(model, pretrained=pretrained, **kwargs)
    except Exception as exc:  # hub unreachable, corrupt file, mismatched checkpoint...
        raise ModusegError(
            f"labeler {labeler!r} could not load {model!r} with pretrained={pretrained!r} ({short_reason(exc)}); "
            "download the "
            "weights on a connected machine and pass the file as labeler.pretrained, or use local-dir:PATH"
        ) from exc
    return loaded


def prompt_names(class_names: Sequence[str], extra: dict[str, list[str]], labeler: str = NAME) -> list[tuple[str, ...]]:
    """Per foreground class (ids 1..C-1): the names it is prompted with."""
    unknown = [k for k in extra if k not in class_names[1:]]
    if unknown:
        raise ModusegError(
            f"labeler {labeler!r} option names has class {unknown[0]!r}{did_you_mean(unknown[0], class_names[1:])}, "
            "which "
            f"is not one of the classes ({', '.join(class_names[1:6])}, ...); fix --set labeler.names"
        )
    out = []
    for name in class_names[1:]:
        names = list(extra.get(name) or PROMPT_NAMES.get(name, (name.replace("_", " "),)))
        out.append(tuple(dict.fromkeys(n.strip() for n in names if n.strip())) or (name,))
    return out


class ClipLabeler:
    """Pseudo masks from dense CLIP logits restricted to the image's labels."""

    oracle = False
    name = NAME

    def __init__(self, options: ClipLabelerOptions):
        from moduseg_builtins.datasets import load_class_names

        self.options = options
        self.device = resolve_device(options.device, f"labeler {self.name!r}")
        self.dtype = torch_dtype(options.dtype)
        self.class_names, _ = load_class_names(options.classes)
        self.names = prompt_names(self.class_names, options.names, self.name)
        self.templates = tuple(options.templates or IMAGENET_TEMPLATES)

        model = load_clip(options.model, options.pretrained, self.name)
        model.eval().requires_grad_(False)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self._check_vision_tower()
        self.patch = int(self.visual.patch_size[0])
        if options.crop % self.patch:
            raise ModusegError(
                f"labeler {self.name!r} option crop={options.crop} is not a multiple of the model's patch size "
                f"{self.patch}; "
                f"set --set labeler.crop={options.crop // self.patch * self.patch or self.patch}"
            )
        cfg = getattr(self.visual, "preprocess_cfg", {}) or {}
        self._mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=self.device).view(
            3, 1, 1
        )
        self._std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=self.device).view(3, 1, 1)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

        import open_clip

        self.tokenizer = open_clip.get_tokenizer(options.model)
        # text rows: background words (owner 0), then every name of every class (owner = class id)
        texts, owners = list(options.background), [0] * len(options.background)
        for class_id, names in enumerate(self.names, start=1):
            texts += names
            owners += [class_id] * len(names)
        self.text = self._embed_texts(texts)  # T×D, L2-normalised
        self.owners = np.asarray(owners, np.int64)
        self.corrector = self._make_corrector()

    def _make_corrector(self):
        """The proposer of the map correction (``correct_with``), or None."""
        options = self.options
        if not options.correct_with:
            return None
        return build_part(NAME, "proposer", "correct_with", options.correct_with, options.correct_options)

    def __repr__(self) -> str:
        o = self.options
        return f"ClipLabeler(model={o.model!r}, pretrained={o.pretrained!r}, dense={o.dense!r}, device={self.device})"

    # -- model pieces -----------------------------------------------------------------------------

    @property
    def visual(self):
        return self.model.visual

    def _check_vision_tower(self) -> None:
        from open_clip.transformer import VisionTransformer

        visual = self.visual
        ok = isinstance(visual, VisionTransformer) and getattr(visual, "attn_pool", None) is None
        last = visual.transformer.resblocks[-1].attn if ok else None
        if not ok or not hasattr(last, "in_proj_weight") or getattr(last, "logit_scale", None) is not None:
            raise ModusegError(
                f"labeler {self.name!r} model {self.options.model!r} has a {type(visual).__name__} vision tower; dense "
                "tokens need an open_clip VisionTransformer with plain attention (e.g. ViT-B-16, ViT-L-14)"
            )

    def _embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Each text: the normalised mean of its normalised template embeddings."""
        prompts = [t.format(text) for text in texts for t in self.templates]
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(prompts), 256):
                tokens = self.tokenizer(prompts[start : start + 256]).to(self.device)
                chunks.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        per_prompt = torch.cat(chunks).view(len(texts), len(self.templates), -1)
        return F.normalize(per_prompt.mean(dim=1), dim=-1)

    def _pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """The positional embedding for a grid, the patch part resized bicubically."""
        key = (grid_h, grid_w)
        if key not in self._pos_cache:
            pos = self.visual.positional_embedding
            g0, g1 = self.visual.grid_size
            cls, grid = pos[:1], pos[1:]
            if (g0, g1) != key:
                grid = grid.reshape(1, g0, g1, -1).permute(0, 3, 1, 2).float()
                grid = F.interpolate(grid, size=key, mode="bicubic", align_corners=False)
                grid = grid.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1).to(pos.dtype)
            self._pos_cache[key] = torch.cat([cls, grid])
        return self._pos_cache[key]

    def dense_features(self, windows: torch.Tensor) -> torch.Tensor:
        """B×3×crop×crop (normalised) → B×h×w×D L2-normalised dense tokens in the joint space."""
        v = self.visual
        x = v.conv1(windows.to(self.dtype))
        batch, width, grid_h, grid_w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(batch, -1, -1)
        x = torch.cat([cls, x], dim=1) + self._pos_embed(grid_h, grid_w).to(x.dtype)
        x = v.ln_pre(x)
        transformer = v.transformer
        first = getattr(transformer, "batch_first", True)
        blocks = transformer.resblocks
        if not first:
            x = x.transpose(0, 1)
        for block in blocks[:-1]:
            x = block(x)
        if not first:
            x = x.transpose(0, 1)
        last = blocks[-1]
        attn = last.attn
        y = last.ln_1(x)
        q, k, val = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        heads = attn.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, t.shape[1], heads, -1).transpose(1, 2)

        q, k, val = split(q), split(k), split(val)
        if hasattr(attn, "ln_q"):
            q, k = attn.ln_q(q), attn.ln_k(k)
        scale = q.shape[-1] ** -0.5
        mode = self.options.dense
        if mode == "maskclip":
            out = val
        else:
            weights = torch.softmax((q @ q.transpose(-1, -2)) * scale, dim=-1)
            if mode == "sclip":
                weights = weights + torch.softmax((k @ k.transpose(-1, -2)) * scale, dim=-1)
            out = weights @ val
        if getattr(attn, "head_scale", None) is not None:
            out = out * attn.head_scale
        out = out.transpose(1, 2).reshape(batch, -1, width)
        if hasattr(attn, "ln_inner"):
            out = attn.ln_inner(out)
        out = attn.out_proj(out)
        tokens = v.ln_post(out[:, 1:])
        if v.proj is not None:
            tokens = tokens @ v.proj
        tokens = F.normalize(tokens.float(), dim=-1)
        return tokens.reshape(batch, grid_h, grid_w, -1)

    # -- logits -----------------------------------------------------------------------------------

    def _prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """→ normalised 3×h×w (resized, zero-padded to ≥ crop) and the resized size before padding."""
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = np.array(image, order="C")  # torch wants a writable buffer (PIL arrays are read-only)
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1).float().div_(255.0)
        height, width = image.shape[:2]
        side = self.options.short_side
        if side is not None and min(height, width) != side:
            factor = side / min(height, width)
            size = (max(1, round(height * factor)), max(1, round(width * factor)))
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        x = (x - self._mean) / self._std
        resized = (int(x.shape[1]), int(x.shape[2]))
        crop = self.options.crop
        pad_h, pad_w = max(0, crop - resized[0]), max(0, crop - resized[1])
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
        return x, resized

    def logits(self, image: np.ndarray, class_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``float32 K×H×W`` for background (row 0) and ``class_ids``, plus the window coverage count
        ``int32 h×w`` on the resized image (every entry ≥ 1)."""
        image = check_image(image, f"labeler {NAME!r}", cast=True)
        height, width = image.shape[:2]
        x, (rh, rw) = self._prepare(image)
        ph, pw = int(x.shape[1]), int(x.shape[2])
        crop, stride = self.options.crop, self.options.stride
        boxes = [(top, left) for top in window_starts(ph, crop, stride) for left in window_starts(pw, crop, stride)]
        owners = torch.from_numpy(self.owners).to(self.device)
        wanted = [0, *class_ids]
        rows = [torch.nonzero(owners == c).flatten() for c in wanted]
        total = torch.zeros((len(wanted), ph, pw), device=self.device)
        count = torch.zeros((ph, pw), device=self.device)
        scale = self.options.logit_scale
        with torch.inference_mode():
            for start in range(0, len(boxes), self.options.batch_size):
                chunk = boxes[start : start + self.options.batch_size]
                windows = torch.stack([x[:, t : t + crop, left : left + crop] for t, left in chunk])
                feats = self.dense_features(windows)  # B×h×w×D
                cos = feats @ self.text.T  # B×h×w×T
                per_class = torch.stack([cos[..., r].amax(dim=-1) for r in rows], dim=1) * scale  # B×K×h×w
                per_class = F.interpolate(per_class, size=(crop, crop), mode="bilinear", align_corners=False)
                for (t, left), logit in zip(chunk, per_class, strict=True):
                    total[:, t : t + crop, left : left + crop] += logit
                    count[t : t + crop, left : left + crop] += 1
            total = total[:, :rh, :rw] / count[:rh, :rw]
            if (rh, rw) != (height, width):
                total = F.interpolate(total[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        return total.cpu().numpy().astype(np.float32), count[:rh, :rw].cpu().numpy().astype(np.int32)

    # -- Labeler ----------------------------------------------------------------------------------

    def label(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        labels = check_labels(sample, len(self.class_names), NAME, self.options.classes)
        image = check_image(image, f"labeler {NAME!r}", cast=True)
        logits, _ = self.logits(image, labels)
        ids = np.asarray([0, *labels], np.int32)
        classes = ids[logits.argmax(axis=0)]
        if self.corrector is not None:
            proposals = self.corrector.propose(image, image_id=sample.id)
            if proposals.masks.shape[1:] != classes.shape:
                raise ModusegError(
                    f"labeler 'clip' correct_with proposer {self.options.correct_with!r} gave "
                    f"{proposals.masks.shape[1:]} masks for a {classes.shape} image"
                )
            classes = majority_correct(classes, proposals, self.options.correct_min_score)
        return classes.astype(np.int32)
