"""``engine=fast``: SAM / SAM 2 automatic mask generation with the filtering done on the device.

The library generators upsample every candidate mask (3 per point prompt) to the image's size, score
its stability, threshold it, run-length encode it on the CPU and decode it again for binary masks. This
generator takes the same steps in the same order on the same tensors, with two changes that do not
change the result:

- a candidate is upsampled only after its predicted IoU passed ``pred_iou_thresh`` (upsampling is per
  mask, so the survivors' logits are the same numbers), in chunks that bound the memory;
- the kept masks stay bool tensors on the device (no run-length round trip, which is lossless).

Point batches are ``points_per_batch`` prompts per decoder call, as in the library, so with the same
setting the decoder sees the same batches and every mask and score is identical; a larger batch (up to the
whole grid) is faster on a GPU and may differ from the library's batches by float rounding only.
Duplicates are removed with the library's box NMS (``torchvision.ops.batched_nms``) on the same boxes and
scores in the same order. One crop layer (``crop_n_layers=0``), no mask-to-mask refinement and no small-
region post-processing: other settings are refused in one line (``engine=library`` runs them).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from moduseg_core import ModusegError, Proposals

from ._torch_common import to_proposals

#: candidates upsampled to the image's size at once (memory: chunk × H × W float32)
_UPSAMPLE_CHUNK = 64


def check_fast(options: Any, name: str) -> None:
    """Refuse the settings the fast engine does not implement, in one line."""
    unsupported = []
    if options.crop_n_layers:
        unsupported.append(f"crop_n_layers={options.crop_n_layers}")
    if getattr(options, "use_m2m", False):
        unsupported.append("use_m2m=true")
    if options.min_mask_region_area:
        unsupported.append(f"min_mask_region_area={options.min_mask_region_area}")
    if unsupported:
        raise ModusegError(
            f"proposer {name!r} engine=fast handles one crop layer, no mask-to-mask refinement and no small-region "
            f"post-processing, not {', '.join(unsupported)}; set --set proposer.engine=library for these settings"
        )


class FastGenerator:
    """Wraps a library generator (for its settings, point grid and predictor); ``generate`` returns
    ``(masks bool N×H×W tensor on the device, scores float N tensor)`` in the library's output order."""

    def __init__(self, generator: Any, sam2: bool):
        self.generator = generator
        self.sam2 = sam2
        self.predictor = generator.predictor
        if sam2:
            self.mask_threshold = float(generator.mask_threshold)
            self.multimask = bool(generator.multimask_output)
        else:
            self.mask_threshold = float(self.predictor.model.mask_threshold)
            self.multimask = True
        #: seconds spent per part, summed over ``generate`` calls (``benchmarks/bench_proposals.py`` prints them)
        self.seconds = {"encoder": 0.0, "decoder": 0.0, "post-processing": 0.0}

    def _lap(self, part: str, since: float) -> float:
        if self.predictor.device.type == "cuda":
            torch.cuda.synchronize(self.predictor.device)
        now = time.perf_counter()
        self.seconds[part] += now - since
        return now

    # -- the two libraries' decoders, as their own predictors call them ----------------------------------

    def _decode_sam(self, points: np.ndarray, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, Callable]:
        predictor = self.predictor
        model = predictor.model
        coords = torch.as_tensor(predictor.transform.apply_coords(points, size), device=predictor.device)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=coords.device)
        sparse, dense = model.prompt_encoder(points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None)
        low, iou = model.mask_decoder(
            image_embeddings=predictor.features, image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=self.multimask,
        )

        def upsample(chosen: torch.Tensor) -> torch.Tensor:
            return model.postprocess_masks(chosen[:, None], predictor.input_size, predictor.original_size)[:, 0]

        return low.flatten(0, 1), iou.flatten(0, 1), upsample

    def _decode_sam2(self, points: np.ndarray, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, Callable]:
        predictor = self.predictor
        model = predictor.model
        tensor = torch.as_tensor(points, dtype=torch.float32, device=predictor.device)
        coords = predictor._transforms.transform_coords(tensor, normalize=True, orig_hw=size)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=coords.device)
        sparse, dense = model.sam_prompt_encoder(points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None)
        high_res = [level[-1].unsqueeze(0) for level in predictor._features["high_res_feats"]]
        low, iou, _, _ = model.sam_mask_decoder(
            image_embeddings=predictor._features["image_embed"][-1].unsqueeze(0),
            image_pe=model.sam_prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=self.multimask, repeat_image=coords.shape[0] > 1,
            high_res_features=high_res,
        )

        def upsample(chosen: torch.Tensor) -> torch.Tensor:
            return predictor._transforms.postprocess_masks(chosen[:, None], size)[:, 0]

        return low.flatten(0, 1), iou.flatten(0, 1), upsample

    # -- the generator --------------------------------------------------------------------------------------

    def propose(self, image: np.ndarray) -> Proposals:
        """``generate`` as the proposers return it: numpy masks and scores, sorted by score."""
        masks, scores = self.generate(image)
        return to_proposals(masks.cpu().numpy(), scores.float().cpu().numpy(), image.shape[:2])

    def generate(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.ops import batched_nms

        if self.sam2:
            from sam2.utils.amg import batched_mask_to_box, calculate_stability_score
        else:
            from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score

        g = self.generator
        height, width = image.shape[:2]
        t = time.perf_counter()
        self.predictor.set_image(image)
        t = self._lap("encoder", t)
        points = g.point_grids[0] * np.array((height, width))[None, ::-1]
        decode = self._decode_sam2 if self.sam2 else self._decode_sam
        masks, scores, boxes = [], [], []
        for start in range(0, len(points), g.points_per_batch):
            low, iou, upsample = decode(points[start : start + g.points_per_batch], (height, width))
            t = self._lap("decoder", t)
            if g.pred_iou_thresh > 0.0:
                keep = iou > g.pred_iou_thresh
                low, iou = low[keep], iou[keep]
            for first in range(0, len(low), _UPSAMPLE_CHUNK):
                logits = upsample(low[first : first + _UPSAMPLE_CHUNK])
                chunk_iou = iou[first : first + _UPSAMPLE_CHUNK]
                if g.stability_score_thresh > 0.0:
                    stable = calculate_stability_score(logits, self.mask_threshold, g.stability_score_offset)
                    keep = stable >= g.stability_score_thresh
                    logits, chunk_iou = logits[keep], chunk_iou[keep]
                binary = logits > self.mask_threshold
                masks.append(binary)
                scores.append(chunk_iou)
                boxes.append(batched_mask_to_box(binary))
            t = self._lap("post-processing", t)
        self.predictor.reset_predictor() if self.sam2 else self.predictor.reset_image()
        device = self.predictor.device
        if not masks:
            return torch.zeros((0, height, width), dtype=torch.bool, device=device), torch.zeros(0, device=device)
        masks_t, scores_t, boxes_t = torch.cat(masks), torch.cat(scores), torch.cat(boxes)
        if not len(masks_t):
            return masks_t, scores_t
        keep = batched_nms(boxes_t.float(), scores_t, torch.zeros_like(boxes_t[:, 0]), iou_threshold=g.box_nms_thresh)
        masks_t, scores_t = masks_t[keep], scores_t[keep]
        self._lap("post-processing", t)
        return masks_t, scores_t
