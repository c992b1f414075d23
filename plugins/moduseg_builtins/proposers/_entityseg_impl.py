"""``EntitySegProposer``: a detectron2 entity-segmentation predictor behind the MaskProposer protocol.

The predictor is built once: detectron2's config system with CropFormer's ``add_maskformer2_config``
(plus ``add_deeplab_config``), the chosen config file, ``MODEL.WEIGHTS`` and ``MODEL.DEVICE``, then
``DefaultPredictor`` (Mask2Former entity configs, the paper's) or CropFormer's ``CropFormerPredictor``.
Any callable with detectron2's predictor call interface works in its place (option ``predictor``):

    predictions = predictor(bgr_image)          # uint8 H×W×3, BGR
    instances = predictions["instances"]        # Instances-like, at the image's size
    instances.pred_masks                        # N×H×W, bool or float probabilities (> 0.5 = inside)
    instances.scores                            # N confidences in [0, 1]
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from moduseg_core import ModusegError, Proposals

from .._shared import check_image, resolve_device, short_reason
from ._torch_common import autocast, to_proposals
from .entityseg import DEFAULT_WEIGHTS_NAME, EntitySegOptions

DETECTRON2_INSTALL = "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
CROPFORMER_HINT = (
    "git clone https://github.com/qqlu/Entity and pass --set proposer.cropformer_root=<Entity>/Entityv2/CropFormer"
)


def load_factory(spec: str) -> Callable[[EntitySegOptions], Any]:
    """``'package.module:factory'`` → the factory (one-line errors)."""
    module_name, attribute = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ModusegError(
            f"proposer 'entityseg' option predictor={spec!r}: cannot import {module_name!r} ({short_reason(exc)}); "
            "make the module importable (PYTHONPATH) or fix the name"
        ) from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ModusegError(
            f"proposer 'entityseg' option predictor={spec!r}: {module_name} has no callable {attribute!r}; "
            "name a factory(options) -> predictor"
        )
    return factory


def _import_detectron2() -> None:
    try:
        import detectron2  # noqa: F401
    except ImportError as exc:
        raise ModusegError(
            "proposer 'entityseg' needs detectron2 and CropFormer, which are not on PyPI: install detectron2 with "
            f"`{DETECTRON2_INSTALL}`, then {CROPFORMER_HINT} (steps: docs/proposers.md)"
        ) from exc


def _cropformer_root(root: str | None) -> Path | None:
    if root is None:
        return None
    path = Path(root).expanduser().resolve()
    if not (path / "mask2former").is_dir():
        raise ModusegError(
            f"proposer 'entityseg' option cropformer_root={root!r} has no mask2former/ folder; point it at "
            "the Entityv2/CropFormer folder of https://github.com/qqlu/Entity"
        )
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return path


def build_predictor(options: EntitySegOptions, device: torch.device) -> Callable[[np.ndarray], Any]:
    """CropFormer's config + weights → a detectron2 predictor (DefaultPredictor or CropFormerPredictor)."""
    _import_detectron2()
    root = _cropformer_root(options.cropformer_root)
    try:
        from mask2former import add_maskformer2_config
    except Exception as exc:
        raise ModusegError(
            f"proposer 'entityseg' cannot import CropFormer's mask2former package ({short_reason(exc)}); "
            f"{CROPFORMER_HINT} (steps: docs/proposers.md)"
        ) from exc
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    config = Path(options.config_file).expanduser()
    if not config.is_file() and root is not None and not config.is_absolute():
        config = root / options.config_file
    if not config.is_file():
        raise ModusegError(
            f"proposer 'entityseg' config_file {options.config_file!r} does not exist (looked in the working directory"
            f"{' and ' + str(root) if root else ''}); set --set proposer.config_file=... or proposer.cropformer_root=..."
        )
    if options.weights is None:
        raise ModusegError(
            "proposer 'entityseg' needs weights: download "
            f"{DEFAULT_WEIGHTS_NAME} (Hugging Face dataset qqlu1992/Adobe_EntitySeg) and pass --set proposer.weights=/path/to/it"
        )
    weights = Path(options.weights).expanduser()
    if not weights.is_file():
        raise ModusegError(
            f"proposer 'entityseg' weights {options.weights!r} do not exist; pass the downloaded checkpoint "
            f"(e.g. {DEFAULT_WEIGHTS_NAME}) with --set proposer.weights=/path/to/it"
        )
    try:
        cfg = get_cfg()
        add_deeplab_config(cfg)
        add_maskformer2_config(cfg)
        cfg.merge_from_file(str(config))
        cfg.merge_from_list(list(options.opts))
        cfg.MODEL.WEIGHTS = str(weights)
        cfg.MODEL.DEVICE = str(device)
        cfg.freeze()
    except Exception as exc:
        raise ModusegError(
            f"proposer 'entityseg' could not read config {config} with opts {options.opts} ({short_reason(exc)}); "
            "use a CropFormer/EntitySeg config and KEY VALUE pairs that exist in it"
        ) from exc
    try:
        if options.predictor_type == "cropformer":
            from demo_cropformer.predictor import CropFormerPredictor

            return CropFormerPredictor(cfg)
        from detectron2.engine import DefaultPredictor

        return DefaultPredictor(cfg)
    except Exception as exc:
        raise ModusegError(
            f"proposer 'entityseg' could not build the {options.predictor_type} predictor from {config} and "
            f"{weights} ({short_reason(exc)}); check that the weights belong to the config"
        ) from exc


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu")
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def read_instances(predictions: Any, hw: tuple[int, int], source: str) -> tuple[np.ndarray, np.ndarray]:
    """detectron2 predictions → (bool N×H×W masks, float32 N scores); one-line errors name ``source``."""
    instances = predictions.get("instances") if isinstance(predictions, dict) else None
    if instances is None:
        raise ModusegError(
            f"proposer 'entityseg': {source} returned {type(predictions).__name__} without 'instances'; "
            "a predictor must return {'instances': Instances with pred_masks and scores}"
        )
    try:
        masks, scores = _to_numpy(instances.pred_masks), _to_numpy(instances.scores)
    except AttributeError as exc:
        raise ModusegError(
            f"proposer 'entityseg': {source} returned instances without pred_masks/scores ({short_reason(exc)}); "
            "use an instance-segmentation (entity) config"
        ) from exc
    height, width = hw
    if masks.ndim != 3 or masks.shape[1:] != (height, width) or scores.shape != (masks.shape[0],):
        raise ModusegError(
            f"proposer 'entityseg': {source} returned masks of shape {masks.shape} and scores of shape {scores.shape} "
            f"for a {height}×{width} image; expected N×{height}×{width} and N"
        )
    if masks.dtype != np.bool_:
        masks = masks > 0.5 if np.issubdtype(masks.dtype, np.floating) else masks != 0
    return masks, scores.astype(np.float32)


class EntitySegProposer:
    """Entity masks from a detectron2 predictor; ``predictor`` may be passed in directly."""

    name = "entityseg"

    def __init__(self, options: EntitySegOptions, predictor: Callable[[np.ndarray], Any] | None = None):
        self.options = options
        self.device = resolve_device(options.device, f"proposer {self.name!r}")
        if predictor is not None:
            self.source = type(predictor).__name__
        elif options.predictor is not None:
            predictor = load_factory(options.predictor)(options)
            self.source = f"predictor {options.predictor!r}"
        else:
            predictor = build_predictor(options, self.device)
            self.source = f"{type(predictor).__name__}({options.config_file})"
        if not callable(predictor):
            raise ModusegError(
                f"proposer 'entityseg': {self.source} built a {type(predictor).__name__}, which is not callable; "
                "a predictor is called with a BGR uint8 image"
            )
        self.predictor = predictor

    def __repr__(self) -> str:
        return f"EntitySegProposer({self.source}, score_threshold={self.options.score_threshold}, device={self.device})"

    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Proposals:
        """Masks scoring at least ``score_threshold``, sorted by score; the predictor sees BGR."""
        image = check_image(image, f"proposer {self.name!r}")
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        with torch.inference_mode(), autocast(self.device, self.options.dtype):
            predictions = self.predictor(bgr)
        masks, scores = read_instances(predictions, image.shape[:2], self.source)
        keep = scores >= self.options.score_threshold
        return to_proposals(masks[keep], scores[keep], image.shape[:2])
