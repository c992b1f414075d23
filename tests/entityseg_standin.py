"""A stand-in for a detectron2 entity-segmentation predictor, for tests/test_proposer_entityseg.py.

detectron2 and CropFormer are not on PyPI, so the ``entityseg`` proposer is tested against this
module, which follows the call interface docs/proposers.md documents for detectron2 predictors:

    predictor(bgr_uint8_image) -> {"instances": obj with .pred_masks (N×H×W) and .scores (N)}

Its masks are computed from the image so a test can tell whether the proposer handed it BGR:
for each channel in the order received (B, G, R), the pixels brighter than 127 and their
complement, as float probabilities (1.0 / 0.0); scores are fixed, 0.95 down to 0.45.
"""

from __future__ import annotations

import numpy as np
import torch

SCORES = (0.95, 0.85, 0.75, 0.65, 0.55, 0.45)

#: How many predictors the factory built, and how many images each saw.
BUILT: list[StandInPredictor] = []


class Instances:
    """The two fields of detectron2's ``Instances`` that the proposer reads."""

    def __init__(self, pred_masks: torch.Tensor, scores: torch.Tensor):
        self.pred_masks = pred_masks
        self.scores = scores


class StandInPredictor:
    def __init__(self, options):
        self.options = options
        self.calls = 0

    def __call__(self, original_image: np.ndarray) -> dict:
        assert isinstance(original_image, np.ndarray) and original_image.dtype == np.uint8
        assert original_image.ndim == 3 and original_image.shape[2] == 3 and original_image.flags.c_contiguous
        self.calls += 1
        masks = []
        for channel in range(3):
            bright = original_image[:, :, channel] > 127
            masks += [bright, ~bright]
        pred_masks = torch.from_numpy(np.stack(masks).astype(np.float32))
        return {"instances": Instances(pred_masks, torch.tensor(SCORES, dtype=torch.float32))}


def make_predictor(options) -> StandInPredictor:
    predictor = StandInPredictor(options)
    BUILT.append(predictor)
    return predictor


def make_wrong_size(options):
    """A broken predictor: masks at half the image's size."""

    def predict(image):
        h, w = image.shape[:2]
        return {"instances": Instances(torch.zeros(2, h // 2, w // 2, dtype=torch.bool), torch.ones(2))}

    return predict


def make_no_instances(options):
    """A broken predictor: a semantic-segmentation output, no instances."""
    return lambda image: {"sem_seg": torch.zeros(3, *image.shape[:2])}


not_a_factory = 42
