"""``engine=fast``: SAM / SAM 2 automatic mask generation with the filtering done on the device.

The library generators decode and upsample every candidate mask (3 per point prompt) to the image's
size, score its stability, threshold it, run-length encode it on the CPU and decode it again for binary
masks. This generator takes the same steps in the same order, with changes that do not change the result:

- the mask decoder runs in two stages (``_sam_decoder``): the transformer and the IoU head for every
  prompt, then only the candidates whose predicted IoU passed ``pred_iou_thresh`` are upsampled to the
  image's size, in chunks that bound the memory (per mask: the survivors' logits are the same numbers;
  the factored decoder also runs the decoder's upscaling and hypernetworks for those prompts only);
- the kept masks stay bool tensors on the device (no run-length round trip, which is lossless).

``fast_decoder=library`` (the default) runs the decoder's transformer as the library does: every mask and
score is identical to the library generator's at the same ``points_per_batch`` (tests/test_proposer_fast.py).
``fast_decoder=factored`` computes the same transformer with the repeated image's work done
once and the attention's projections folded into the few prompt tokens (about 4× fewer multiply-adds):
the same arithmetic in another order, so logits differ by float rounding (docs/proposers.md gives the
measured agreement). A larger ``points_per_batch`` (up to the whole grid) is faster on a GPU and may
differ from the library's batches by float rounding only.
Duplicates are removed with the library's box NMS (``torchvision.ops.batched_nms``) on the same boxes and
scores in the same order. Crop layers (``crop_n_layers``) run as the library's: each crop encoded on its own,
masks touching a crop's inner edge dropped, NMS within the crop, uncropped, then NMS between crops favouring
the smaller crop. Small-region post-processing (``min_mask_region_area``) is the library's own: SAM's runs
OpenCV on the CPU then box NMS; SAM 2's predictor does it on the device in the upsampling both engines call.

SAM 2's mask-to-mask refinement (``use_m2m``) is the library's ``refine_with_m2m`` on the library's own prompt
encoder and mask decoder, with either ``fast_decoder`` (the factored one computes only the first decoding):
stage 1 upscales every prompt, each candidate (prompt × mask) is decoded again with its own low-resolution
logits as the mask input, ``points_per_batch`` candidates per decoder call, one mask each; the refined IoU,
stability and crop-edge filters follow, and only the candidates passing the refined IoU are upsampled.

``GeneratorProposer`` is what the ``sam`` and ``sam2`` proposers share: ``propose`` / ``propose_batch`` through
either engine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from moduseg_core import Proposals

from .._shared import check_image
from ._sam_decoder import TokenState, TwoStageDecoder
from ._torch_common import to_proposals

#: candidates upsampled to the image's size at once (memory: chunk × H × W float32)
_UPSAMPLE_CHUNK = 64


def _nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices kept by class-agnostic box NMS (``torchvision.ops.batched_nms`` with one category, as the libraries)."""
    from torchvision.ops import batched_nms

    return batched_nms(boxes.float(), scores, torch.zeros_like(boxes[:, 0]), iou_threshold=threshold)


def _as_proposals(found: tuple[torch.Tensor, torch.Tensor], image: np.ndarray) -> Proposals:
    masks, scores = found
    return to_proposals(masks, scores.float().cpu().numpy(), image.shape[:2])  # masks stay on the device


class GeneratorProposer:
    """What the ``sam`` and ``sam2`` proposers share: a library generator (``generator``) and, with
    ``engine=fast``, a ``FastGenerator`` over it (``fast``); ``propose`` / ``propose_batch`` run either."""

    name: str
    options: Any
    generator: Any
    fast: FastGenerator | None

    def _engine(self, sam2: bool) -> None:
        options = self.options
        self.fast = (
            FastGenerator(self.generator, sam2=sam2, decoder=options.fast_decoder) if options.engine == "fast" else None
        )

    def _precision(self) -> contextlib.AbstractContextManager:
        """The context the model runs in (SAM 2: autocast to its ``dtype``)."""
        return contextlib.nullcontext()

    def propose_batch(
        self, images: Sequence[np.ndarray], image_ids: Sequence[str | None] | None = None
    ) -> list[Proposals]:
        """``propose`` for several images; engine=fast encodes ``batch_size`` of them per image-encoder call."""
        if self.fast is None:
            return [self.propose(image) for image in images]
        images = [check_image(image, f"proposer {self.name!r}") for image in images]
        with torch.inference_mode(), self._precision():
            return self.fast.propose_many(images, self.options.batch_size)

    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Proposals:
        """Masks at the image's size; score = predicted IoU clipped to [0, 1]; sorted by score."""
        image = check_image(image, f"proposer {self.name!r}")
        with torch.inference_mode(), self._precision():
            if self.fast is not None:
                return self.fast.propose(image)
            records = self.generator.generate(image)
        return to_proposals(
            [record["segmentation"] for record in records], [record["predicted_iou"] for record in records],
            image.shape[:2],
        )


class FastGenerator:
    """Wraps a library generator (for its settings, point grid and predictor); ``generate`` returns
    ``(masks bool N×H×W tensor on the device, scores float N tensor)`` in the library's output order."""

    def __init__(self, generator: Any, sam2: bool, decoder: str = "library"):
        self.generator = generator
        self.sam2 = sam2
        self.m2m = sam2 and bool(generator.use_m2m)
        self.predictor = generator.predictor
        if sam2:
            self.mask_threshold = float(generator.mask_threshold)
            multimask = bool(generator.multimask_output)
            module = self.predictor.model.sam_mask_decoder
        else:
            self.mask_threshold = float(self.predictor.model.mask_threshold)
            multimask = True
            module = self.predictor.model.mask_decoder
        self.decoder = TwoStageDecoder(module, multimask, factored=decoder == "factored", every_low=self.m2m)
        #: seconds spent per part, summed over ``generate`` calls (``benchmarks/bench_proposals.py`` prints them)
        self.seconds = {"encoder": 0.0, "decoder": 0.0, "post-processing": 0.0}
        self._index = 0  # which of the encoded images SAM 2's features are read for

    def _lap(self, part: str, since: float) -> float:
        if self.predictor.device.type == "cuda":
            torch.cuda.synchronize(self.predictor.device)
        now = time.perf_counter()
        self.seconds[part] += now - since
        return now

    # -- the two libraries' prompt encoders, then the two-stage decoder (_sam_decoder) ---------------------

    def _decode_sam(self, points: np.ndarray, size: tuple[int, int]) -> tuple[TokenState, Callable]:
        predictor = self.predictor
        model = predictor.model
        coords = torch.as_tensor(predictor.transform.apply_coords(points, size), device=predictor.device)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=coords.device)
        sparse, dense = model.prompt_encoder(points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None)
        state = self.decoder.tokens(predictor.features, model.prompt_encoder.get_dense_pe(), sparse, dense)

        def upsample(chosen: torch.Tensor) -> torch.Tensor:
            return model.postprocess_masks(chosen[:, None], predictor.input_size, predictor.original_size)[:, 0]

        return state, upsample

    def _prompts_sam2(self, points: torch.Tensor, size: tuple[int, int], masks: torch.Tensor | None = None) -> tuple:
        """SAM 2's prompt embeddings (sparse, dense) of one foreground point each, and a mask input if given."""
        model = self.predictor.model
        coords = self.predictor._transforms.transform_coords(points, normalize=True, orig_hw=size)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=coords.device)
        return model.sam_prompt_encoder(points=(coords[:, None, :], labels[:, None]), boxes=None, masks=masks)

    def _image_sam2(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """SAM 2's image embedding and high-resolution features of the image ``_index`` points at."""
        i, features = self._index, self.predictor._features
        return features["image_embed"][i : i + 1], [level[i : i + 1] for level in features["high_res_feats"]]

    def _decode_sam2(self, points: np.ndarray, size: tuple[int, int]) -> tuple[TokenState, Callable]:
        predictor = self.predictor
        sparse, dense = self._prompts_sam2(torch.as_tensor(points, dtype=torch.float32, device=predictor.device), size)
        embed, high_res = self._image_sam2()
        state = self.decoder.tokens(embed, predictor.model.sam_prompt_encoder.get_dense_pe(), sparse, dense, high_res)
        if self.m2m:
            state = self._refine_sam2(points, state, size)

        def upsample(chosen: torch.Tensor) -> torch.Tensor:
            return predictor._transforms.postprocess_masks(chosen[:, None], size)[:, 0]

        return state, upsample

    def _refine_sam2(self, points: np.ndarray, state: TokenState, size: tuple[int, int]) -> TokenState:
        """SAM 2's mask-to-mask refinement (``use_m2m``), the library's ``refine_with_m2m`` on the library's
        modules: every candidate re-decoded with its point and its own low-resolution logits as the mask input
        (clamped to ±32, as the predictor returns them), one mask each (``multimask_output=False``),
        ``points_per_batch`` candidates per decoder call. Returns the candidates as prompts of one mask each."""
        predictor = self.predictor
        model = predictor.model
        m = state.iou.size(1)
        tensor = torch.as_tensor(points, dtype=torch.float32, device=predictor.device).repeat_interleave(m, dim=0)
        low = state.low.flatten(0, 1).clamp(-32.0, 32.0)
        embed, high_res = self._image_sam2()
        batch = self.generator.points_per_batch
        ious, lows = [], []
        for start in range(0, len(low), batch):
            sparse, dense = self._prompts_sam2(tensor[start : start + batch], size, low[start : start + batch, None])
            masks, iou, _, _ = model.sam_mask_decoder(
                image_embeddings=embed, image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
                repeat_image=True, high_res_features=high_res,
            )
            ious.append(iou)
            lows.append(masks)
        return replace(state, iou=torch.cat(ious), low=torch.cat(lows))

    # -- the image encoder, several images per call ------------------------------------------------------

    def _encode(self, images: list[np.ndarray]) -> Callable[[int], None]:
        """Encode the images in one image-encoder call; returns ``select(i)``, which points the predictor at
        image ``i``'s features (the library's own transforms; its ``set_image`` for a single image)."""
        predictor = self.predictor
        if self.sam2:
            if len(images) == 1:
                predictor.set_image(images[0])
            else:
                predictor.set_image_batch(images)

            def select(i: int) -> None:
                self._index = i

            return select
        if len(images) == 1:
            predictor.set_image(images[0])
            return lambda i: None
        model = predictor.model
        inputs = []
        for image in images:
            if model.image_format != "RGB":
                image = image[..., ::-1]
            resized = torch.as_tensor(predictor.transform.apply_image(image), device=predictor.device)
            inputs.append(resized.permute(2, 0, 1).contiguous()[None])
        features = model.image_encoder(torch.cat([model.preprocess(x) for x in inputs]))  # padded to one size

        def select_sam(i: int) -> None:
            predictor.reset_image()
            predictor.original_size, predictor.input_size = images[i].shape[:2], tuple(inputs[i].shape[-2:])
            predictor.features, predictor.is_image_set = features[i : i + 1], True

        return select_sam

    # -- the generator --------------------------------------------------------------------------------------

    def propose(self, image: np.ndarray) -> Proposals:
        """``generate`` as the proposers return it: numpy masks and scores, sorted by score."""
        return self.propose_many([image], 1)[0]

    def propose_many(self, images: list[np.ndarray], batch_size: int) -> list[Proposals]:
        """``propose`` for several images, ``batch_size`` per image-encoder call (the decoder runs per image)."""
        out = []
        if self.generator.crop_n_layers:  # crops are encoded one by one
            return [_as_proposals(self.generate(image), image) for image in images]
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            t = time.perf_counter()
            select = self._encode(chunk)
            self._lap("encoder", t)
            for i, image in enumerate(chunk):
                select(i)
                out.append(_as_proposals(self.generate(image, encoded=True), image))
            self._reset()
        return out

    def _reset(self) -> None:
        self._index = 0
        self.predictor.reset_predictor() if self.sam2 else self.predictor.reset_image()

    def generate(self, image: np.ndarray, encoded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The image's masks (bool N×H×W on the device) and scores, in the library's output order; ``encoded``:
        the predictor already holds the image's features (``propose_many``; one crop layer)."""
        from torchvision.ops import box_area

        (generate_crop_boxes,) = self._amg("generate_crop_boxes")
        g = self.generator
        height, width = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes((height, width), g.crop_n_layers, g.crop_overlap_ratio)
        encode = not encoded or len(crop_boxes) > 1  # each crop is encoded here, then released
        found = []
        for crop_box, layer in zip(crop_boxes, layers, strict=True):
            x0, y0, x1, y1 = crop_box
            crop = image[y0:y1, x0:x1]
            if encode:
                t = time.perf_counter()
                self._encode([crop])
                self._lap("encoder", t)
            masks, scores, boxes = self._crop(crop, g.point_grids[layer], crop_box, (height, width))
            if encode:
                self._reset()
            crop_box_t = torch.as_tensor([crop_box], device=boxes.device).expand(len(boxes), 4)
            found.append((masks, scores, boxes, crop_box_t))
        t = time.perf_counter()
        masks_t, scores_t, boxes_t, crops_t = (torch.cat(parts) for parts in zip(*found, strict=True))
        if len(crop_boxes) > 1 and len(masks_t):  # duplicates between crops: the smaller crop's mask wins
            keep = _nms(boxes_t, (1 / box_area(crops_t)).to(boxes_t.device), g.crop_nms_thresh)
            masks_t, scores_t, boxes_t = masks_t[keep], scores_t[keep], boxes_t[keep]
        if g.min_mask_region_area > 0 and not self.sam2 and len(masks_t):
            # (SAM 2's predictor fills holes and removes specks itself, when it upsamples: the same call here)
            masks_t, scores_t = self._small_regions(masks_t, scores_t)
        self._lap("post-processing", t)
        return masks_t, scores_t

    def _crop(self, crop: np.ndarray, grid: np.ndarray, crop_box: list[int],
              size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One crop's kept masks (at the image's size), scores and boxes (in the image), the predictor holding the
        crop's features: point batches, IoU and stability filters, crop-edge filter, box NMS, uncropping."""
        batched_mask_to_box, calculate_stability_score, is_box_near_crop_edge = self._amg(
            "batched_mask_to_box", "calculate_stability_score", "is_box_near_crop_edge")
        g = self.generator
        h, w = crop.shape[:2]
        height, width = size
        points = grid * np.array((h, w))[None, ::-1]
        decode = self._decode_sam2 if self.sam2 else self._decode_sam
        masks, scores, boxes = [], [], []
        t = time.perf_counter()
        for start in range(0, len(points), g.points_per_batch):
            state, upsample = decode(points[start : start + g.points_per_batch], (h, w))
            iou = state.iou.flatten()
            chosen = torch.arange(len(iou), device=iou.device)
            if g.pred_iou_thresh > 0.0:
                chosen = chosen[iou > g.pred_iou_thresh]
            t = self._lap("decoder", t)
            for first in range(0, len(chosen), _UPSAMPLE_CHUNK):
                part = chosen[first : first + _UPSAMPLE_CHUNK]
                low = self.decoder.masks(state, part)
                t = self._lap("decoder", t)
                logits = upsample(low)
                chunk_iou = iou[part]
                if g.stability_score_thresh > 0.0:
                    stable = calculate_stability_score(logits, self.mask_threshold, g.stability_score_offset)
                    keep = stable >= g.stability_score_thresh
                    logits, chunk_iou = logits[keep], chunk_iou[keep]
                binary = logits > self.mask_threshold
                box = batched_mask_to_box(binary)
                inside = ~is_box_near_crop_edge(box, crop_box, [0, 0, width, height])
                if not torch.all(inside):
                    binary, chunk_iou, box = binary[inside], chunk_iou[inside], box[inside]
                masks.append(binary)
                scores.append(chunk_iou)
                boxes.append(box)
                t = self._lap("post-processing", t)
        device = self.predictor.device
        if not masks or not sum(len(m) for m in masks):
            empty = torch.zeros((0, height, width), dtype=torch.bool, device=device)
            return empty, torch.zeros(0, device=device), torch.zeros((0, 4), dtype=torch.int64, device=device)
        masks_t, scores_t, boxes_t = torch.cat(masks), torch.cat(scores), torch.cat(boxes)
        keep = _nms(boxes_t, scores_t, g.box_nms_thresh)
        masks_t, scores_t, boxes_t = masks_t[keep], scores_t[keep], boxes_t[keep]
        x0, y0, x1, y1 = crop_box
        if (x0, y0, x1, y1) != (0, 0, width, height):  # uncrop: the mask at the image's size, the box in the image
            masks_t = torch.nn.functional.pad(masks_t, (x0, width - x1, y0, height - y1), value=False)
            boxes_t = boxes_t + torch.as_tensor([x0, y0, x0, y0], device=boxes_t.device)
        self._lap("post-processing", t)
        return masks_t, scores_t, boxes_t

    def _small_regions(self, masks: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The library's small-region post-processing (OpenCV on the CPU, as the library does): holes, then islands
        under ``min_mask_region_area`` removed; box NMS preferring unchanged masks removes new duplicates."""
        batched_mask_to_box, remove_small_regions = self._amg("batched_mask_to_box", "remove_small_regions")
        g = self.generator
        area = g.min_mask_region_area
        cleaned, unchanged = [], []
        for mask in masks.cpu().numpy():
            mask, holes = remove_small_regions(mask, area, mode="holes")
            mask, islands = remove_small_regions(mask, area, mode="islands")
            cleaned.append(torch.as_tensor(mask))
            unchanged.append(float(not holes and not islands))
        new = torch.stack(cleaned).to(masks.device)
        boxes = batched_mask_to_box(new)
        keep = _nms(boxes, torch.as_tensor(unchanged, device=boxes.device), max(g.box_nms_thresh, g.crop_nms_thresh))
        return new[keep], scores[keep]

    def _amg(self, *names: str) -> list[Any]:
        """The library's own mask-generation helpers (``segment_anything.utils.amg`` or ``sam2.utils.amg``)."""
        import importlib

        module = importlib.import_module("sam2.utils.amg" if self.sam2 else "segment_anything.utils.amg")
        return [getattr(module, name) for name in names]
