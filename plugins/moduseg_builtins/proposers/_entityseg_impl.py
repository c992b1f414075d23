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
import importlib.util
import logging
import pickle
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moduseg_core import ModusegError, Proposals

from .._shared import check_image, resolve_device, short_reason
from ._entityseg_setup import DEFORM_OP, find_config, find_root, find_weights
from ._torch_common import autocast, to_proposals
from .entityseg import CROPFORMER_HINT, DETECTRON2_INSTALL, PIP_NAMES, EntitySegOptions

log = logging.getLogger("moduseg.proposer.entityseg")
_SAID: set[str] = set()


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


def _say_once(key: str, message: str) -> None:
    if key not in _SAID:
        _SAID.add(key)
        log.warning(message)


def _list_from_file(filename: str, prefix: str = "", offset: int = 0, max_num: int = 0, encoding: str = "utf-8",
                    **_: Any) -> list[str]:
    """The lines of a text file (what CropFormer's dataset registration asks mmcv for)."""
    with open(filename, encoding=encoding) as handle:
        lines = [prefix + line.rstrip("\n\r") for line in handle][offset:]
    return lines[:max_num] if max_num > 0 else lines


def _absent_op(*_: Any, **__: Any) -> Any:
    raise RuntimeError(f"{DEFORM_OP} is not built")


def _stand_ins() -> dict[str, types.ModuleType]:
    """Modules CropFormer imports that inference does not need, when they are not installed:

    * ``mmcv`` (only ``list_from_file``, for a dataset registration that inference never calls);
    * the compiled deformable-attention op: CropFormer refuses to import without it, but its layer
      already falls back to its PyTorch computation when the op raises, which this one always does.
    """
    found = {}
    if importlib.util.find_spec("mmcv") is None:
        found["mmcv"] = types.ModuleType("mmcv", "moduseg's stand-in: list_from_file only")
        found["mmcv"].list_from_file = _list_from_file  # type: ignore[attr-defined]
    if importlib.util.find_spec(DEFORM_OP) is None:
        found[DEFORM_OP] = types.ModuleType(DEFORM_OP, "moduseg's stand-in: every call raises")
        found[DEFORM_OP].ms_deform_attn_forward = _absent_op  # type: ignore[attr-defined]
        found[DEFORM_OP].ms_deform_attn_backward = _absent_op  # type: ignore[attr-defined]
    return found


def import_cropformer(root: Path | None) -> Any:
    """CropFormer's ``mask2former`` package (from ``root`` when given), without mmcv or the compiled op.

    The stand-ins are in ``sys.modules`` only while CropFormer imports; a missing module is named
    with the pip package that provides it."""
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    stand_ins = {k: v for k, v in _stand_ins().items() if k not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        import mask2former
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing == "mask2former":
            raise ModusegError(
                f"proposer 'entityseg' cannot import CropFormer's mask2former package ({short_reason(exc)}); "
                f"{CROPFORMER_HINT} (steps: docs/paper.md)"
            ) from exc
        where = f" from {root}" if root else ""
        raise ModusegError(
            f"proposer 'entityseg': CropFormer{where} imports {missing!r}, which is not installed; install it with: "
            f"pip install {PIP_NAMES.get(missing, missing)}"
        ) from exc
    except Exception as exc:
        raise ModusegError(
            f"proposer 'entityseg' cannot import CropFormer's mask2former package ({short_reason(exc)}); "
            "use the Entityv2/CropFormer folder of https://github.com/qqlu/Entity with this detectron2 (docs/paper.md)"
        ) from exc
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    if DEFORM_OP in stand_ins:
        _say_once(DEFORM_OP, f"entityseg: CropFormer's compiled deformable-attention op ({DEFORM_OP}) is not built; "
                  "its PyTorch fallback runs instead (the same masks, slower on a GPU)")
    return mask2former


def _numpy_globals() -> list[Any]:
    """What a checkpoint needs to hold numpy arrays and scalars (data only: no code runs on loading)."""
    import numpy

    core = getattr(numpy, "_core", None) or numpy.core
    found = [core.multiarray._reconstruct, core.multiarray.scalar, numpy.ndarray, numpy.dtype]
    found += [type(numpy.dtype(code)) for code in "?bBhHiIlLqQefdgFDGOSUV"]
    return found


def load_checkpoint(path: Path, *, trusted: bool = False) -> dict[str, Any]:
    """A torch checkpoint, as safely as it loads: ``weights_only`` (tensors), then ``weights_only`` with numpy
    arrays and scalars allowed, then — only when ``trusted`` — everything (``weights_only=False``)."""
    def load(**kwargs: Any) -> Any:
        return torch.load(path, map_location="cpu", **kwargs)

    broken = (
        f"proposer 'entityseg' weights {path} cannot be read as a torch checkpoint ({{}}); download the file again"
    )
    try:
        try:
            return load(weights_only=True)
        except pickle.UnpicklingError:
            with torch.serialization.safe_globals(_numpy_globals()):
                return load(weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            refused = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as inner:  # noqa: BLE001 - not a zip checkpoint, truncated...
            raise ModusegError(broken.format(short_reason(inner))) from exc
        if not refused:
            raise ModusegError(broken.format(short_reason(exc))) from exc
        if trusted:
            return load(weights_only=False)
        raise ModusegError(
            f"proposer 'entityseg' weights {path} hold objects that torch's safe loader (weights_only=True) refuses "
            f"({', '.join(refused)}); if you trust the file, --set proposer.trust_weights=true loads it with "
            "weights_only=False"
        ) from exc
    except Exception as exc:
        raise ModusegError(broken.format(short_reason(exc))) from exc


def build_predictor(options: EntitySegOptions, device: torch.device) -> Callable[[np.ndarray], Any]:
    """CropFormer's config + weights → a detectron2 predictor (DefaultPredictor or CropFormerPredictor)."""
    _import_detectron2()
    root = find_root(options.cropformer_root)
    mask2former = import_cropformer(root)
    if root is None:
        root = Path(mask2former.__file__).parent.parent
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    config = find_config(options, root)
    weights = find_weights(options)
    own_loader = weights.suffix != ".pkl"  # detectron2 reads its .pkl model-zoo files itself (no torch.load)
    try:
        cfg = get_cfg()
        add_deeplab_config(cfg)
        mask2former.add_maskformer2_config(cfg)
        cfg.merge_from_file(str(config))
        cfg.merge_from_list(list(options.opts))
        cfg.MODEL.WEIGHTS = "" if own_loader else str(weights)
        cfg.MODEL.DEVICE = str(device)
        cfg.freeze()
    except Exception as exc:
        raise ModusegError(
            f"proposer 'entityseg' could not read config {config} with opts {options.opts} ({short_reason(exc)}); "
            "use a CropFormer/EntitySeg config and KEY VALUE pairs that exist in it"
        ) from exc
    checkpoint = load_checkpoint(weights, trusted=options.trust_weights) if own_loader else None
    try:
        if options.predictor_type == "cropformer":
            from demo_cropformer.predictor import CropFormerPredictor

            predictor = CropFormerPredictor(cfg)
        else:
            from detectron2.engine import DefaultPredictor

            predictor = DefaultPredictor(cfg)
    except Exception as exc:
        raise ModusegError(
            f"proposer 'entityseg' could not build the {options.predictor_type} predictor from {config} "
            f"({short_reason(exc)}); use a CropFormer/EntitySeg config with its predictor_type"
        ) from exc
    if checkpoint is not None:
        _load_weights(predictor.model, checkpoint, weights, config)
    return predictor


def _load_weights(model: torch.nn.Module, checkpoint: Any, weights: Path, config: Path) -> None:
    """detectron2's own state-dict loading (prefix and shape handling, its log of unmatched keys)."""
    from detectron2.checkpoint import DetectionCheckpointer

    if not isinstance(checkpoint, dict):
        kind = type(checkpoint).__name__
        raise ModusegError(f"proposer 'entityseg' weights {weights} hold a {kind}, not a checkpoint; pass a .pth file")
    checkpoint = dict(checkpoint) if "model" in checkpoint else {"model": dict(checkpoint)}
    expected = set(model.state_dict())
    matched = expected & {key.removeprefix("module.") for key in checkpoint["model"]}
    if expected and len(matched) < len(expected) // 2:
        raise ModusegError(
            f"proposer 'entityseg' weights {weights} match {len(matched)} of the {len(expected)} parameters of the "
            "model"
            " "
            f"{config.name} builds; pass the checkpoint of that config (or the config of that checkpoint)"
        )
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpoint)
    if incompatible is not None:
        checkpointer._log_incompatible_keys(incompatible)


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
