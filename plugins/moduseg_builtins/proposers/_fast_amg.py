"""``engine=fast``: SAM / SAM 2 automatic mask generation with the filtering done on the device.

The library generators decode and upsample every candidate mask (3 per point prompt) to the image's
size, score its stability, threshold it, run-length encode it on the CPU and decode it again for binary
masks. This generator takes the same steps in the same order, with changes that do not change the result:

- the mask decoder runs in two stages (``_sam_decoder``): the transformer and the IoU head for every
  prompt, then the decoder's upscaling and hypernetworks only for the candidates whose predicted IoU
  passed ``pred_iou_thresh``; those candidates are upsampled to the image's size in chunks that bound
  the memory (both steps are per mask: the survivors' logits are the same numbers);
- the kept masks stay bool tensors on the device (no run-length round trip, which is lossless).

``fast_decoder=library`` runs the decoder's transformer as the library does: every mask and score is
identical to the library generator's at the same ``points_per_batch`` (tests/test_proposer_fast.py).
``fast_decoder=factored`` (the default) computes the same transformer with the repeated image's work done
once and the attention's projections folded into the few prompt tokens (about 4× fewer multiply-adds):
the same arithmetic in another order, so logits differ by float rounding (docs/proposers.md gives the
measured agreement). A larger ``points_per_batch`` (up to the whole grid) is faster on a GPU and may
differ from the library's batches by float rounding only.
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

from ._sam_decoder import TokenState, TwoStageDecoder
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

    def __init__(self, generator: Any, sam2: bool, decoder: str = "factored"):
        self.generator = generator
        self.sam2 = sam2
        self.predictor = generator.predictor
        if sam2:
            self.mask_threshold = float(generator.mask_threshold)
            multimask = bool(generator.multimask_output)
            module = self.predictor.model.sam_mask_decoder
        else:
            self.mask_threshold = float(self.predictor.model.mask_threshold)
            multimask = True
            module = self.predictor.model.mask_decoder
        self.decoder = TwoStageDecoder(module, multimask, factored=decoder == "factored")
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

    def _decode_sam2(self, points: np.ndarray, size: tuple[int, int]) -> tuple[TokenState, Callable]:
        predictor = self.predictor
        model = predictor.model
        tensor = torch.as_tensor(points, dtype=torch.float32, device=predictor.device)
        coords = predictor._transforms.transform_coords(tensor, normalize=True, orig_hw=size)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=coords.device)
        sparse, dense = model.sam_prompt_encoder(points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None)
        i = self._index
        high_res = [level[i : i + 1] for level in predictor._features["high_res_feats"]]
        state = self.decoder.tokens(predictor._features["image_embed"][i : i + 1],
                                    model.sam_prompt_encoder.get_dense_pe(), sparse, dense, high_res)

        def upsample(chosen: torch.Tensor) -> torch.Tensor:
            return predictor._transforms.postprocess_masks(chosen[:, None], size)[:, 0]

        return state, upsample

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
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            t = time.perf_counter()
            select = self._encode(chunk)
            self._lap("encoder", t)
            for i, image in enumerate(chunk):
                select(i)
                masks, scores = self.generate(image, encoded=True)
                out.append(to_proposals(masks.cpu().numpy(), scores.float().cpu().numpy(), image.shape[:2]))
            self._reset()
        return out

    def _reset(self) -> None:
        self._index = 0
        self.predictor.reset_predictor() if self.sam2 else self.predictor.reset_image()

    def generate(self, image: np.ndarray, encoded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The image's masks (bool N×H×W on the device) and scores, in the library's output order; ``encoded``:
        the predictor already holds the image's features (``propose_many``)."""
        from torchvision.ops import batched_nms

        if self.sam2:
            from sam2.utils.amg import batched_mask_to_box, calculate_stability_score
        else:
            from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score

        g = self.generator
        height, width = image.shape[:2]
        t = time.perf_counter()
        if not encoded:
            self._encode([image])
            t = self._lap("encoder", t)
        points = g.point_grids[0] * np.array((height, width))[None, ::-1]
        decode = self._decode_sam2 if self.sam2 else self._decode_sam
        masks, scores, boxes = [], [], []
        for start in range(0, len(points), g.points_per_batch):
            state, upsample = decode(points[start : start + g.points_per_batch], (height, width))
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
                masks.append(binary)
                scores.append(chunk_iou)
                boxes.append(batched_mask_to_box(binary))
                t = self._lap("post-processing", t)
        if not encoded:
            self._reset()
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
