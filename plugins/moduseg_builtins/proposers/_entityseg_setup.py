"""Where ``entityseg``'s pieces are (CropFormer, its config, the weights) and what ``moduseg doctor`` checks.

Light: paths, ``find_spec`` and the Hugging Face cache only, so the doctor and the implementation
resolve the same files without importing detectron2 or torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moduseg_core import ModusegError
from moduseg_core.doctor.checks import Check, fail, hf_cached_file, module_found, module_origin, ok, package

#: The paper's model: Mask2Former with a HorNet backbone trained for entity segmentation (EntitySeg).
DEFAULT_CONFIG = "configs/entityv2/entity_segmentation/mask2former_hornet_3x.yaml"
DEFAULT_WEIGHTS_NAME = "Mask2Former_hornet_3x_576d0b.pth"
#: where `hf download` finds the paper's checkpoint (a gated Hugging Face dataset); ``weights: null`` looks there
WEIGHTS_REPO = "qqlu1992/Adobe_EntitySeg"
WEIGHTS_FILE = f"CropFormer_model/Entity_Segmentation/Mask2Former_hornet_3x/{DEFAULT_WEIGHTS_NAME}"
WEIGHTS_DOWNLOAD = f"hf download {WEIGHTS_REPO} {WEIGHTS_FILE} --repo-type dataset"

DETECTRON2_INSTALL = "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
CROPFORMER_HINT = (
    "git clone https://github.com/qqlu/Entity and pass --set proposer.cropformer_root=<Entity>/Entityv2/CropFormer"
)
#: modules CropFormer imports that a pip name other than the module's installs
PIP_NAMES = {"mmcv": "mmcv-lite", "cv2": "opencv-python-headless", "PIL": "pillow", "sklearn": "scikit-learn"}

#: CropFormer's compiled deformable-attention op (optional: CropFormer has a PyTorch fallback)
DEFORM_OP = "MultiScaleDeformableAttention"


def find_root(option: str | None) -> Path | None:
    """The CropFormer folder: ``cropformer_root``, else the folder above an importable ``mask2former`` package."""
    if option is not None:
        path = Path(option).expanduser().resolve()
        if not (path / "mask2former").is_dir():
            raise ModusegError(
                f"proposer 'entityseg' option cropformer_root={option!r} has no mask2former/ folder; point it at "
                "the Entityv2/CropFormer folder of https://github.com/qqlu/Entity"
            )
        return path
    origin = module_origin("mask2former")
    if origin is not None and origin.name == "mask2former" and (origin.parent / "configs").is_dir():
        return origin.parent
    return None


def find_config(options: Any, root: Path | None) -> Path:
    """``config_file`` as given, else under the CropFormer folder."""
    config = Path(options.config_file).expanduser()
    if config.is_file():
        return config
    if root is not None and not config.is_absolute() and (root / options.config_file).is_file():
        return root / options.config_file
    where = " and " + str(root) if root else " (cropformer_root is not set and mask2former is not importable)"
    raise ModusegError(
        f"proposer 'entityseg' config_file {options.config_file!r} does not exist (looked in the working directory"
        f"{where}); set --set proposer.cropformer_root=<Entity>/Entityv2/CropFormer or proposer.config_file=..."
    )


def find_weights(options: Any) -> Path:
    """``weights``, or (null, default config) the paper's checkpoint in the Hugging Face cache."""
    if options.weights is None:
        cached = (
            hf_cached_file(WEIGHTS_REPO, WEIGHTS_FILE, "dataset") if options.config_file == DEFAULT_CONFIG else None
        )
        if cached is not None:
            return cached
        raise ModusegError(
            f"proposer 'entityseg' needs weights: download {DEFAULT_WEIGHTS_NAME} with `{WEIGHTS_DOWNLOAD}` (a gated "
            "dataset: accept its terms, `hf auth login`; weights: null then finds it) or pass "
            "--set proposer.weights=/path"
        )
    weights = Path(options.weights).expanduser()
    if not weights.is_file():
        raise ModusegError(
            f"proposer 'entityseg' weights {options.weights!r} do not exist; pass the downloaded checkpoint "
            f"(e.g. {DEFAULT_WEIGHTS_NAME}) with --set proposer.weights=/path/to/it"
        )
    return weights


def checks(options: Any) -> list[Check]:
    """``moduseg doctor``'s view of an ``entityseg`` proposer."""
    if options.predictor is not None:
        module = options.predictor.split(":")[0]
        if module_found(module):
            return [ok(f"predictor {options.predictor}")]
        return [
            fail(f"predictor module {module!r} is not importable", "make it importable (PYTHONPATH) or fix the name")
        ]
    found = [package("detectron2", DETECTRON2_INSTALL)]
    try:
        root = find_root(options.cropformer_root)
    except ModusegError as exc:
        return [*found, fail(str(exc), CROPFORMER_HINT)]
    if root is None:
        found.append(
            fail("CropFormer's mask2former package is not importable and cropformer_root is not set", CROPFORMER_HINT)
        )
    else:
        found.append(ok(f"CropFormer {root}"))
    if not module_found("mmcv"):
        found.append(ok("mmcv absent (CropFormer imports it only to register a dataset: bypassed)"))
    if module_found(DEFORM_OP):
        found.append(ok("deformable-attention op built"))
    else:
        found.append(ok("deformable-attention op not built: CropFormer's PyTorch fallback"))
    for find in (lambda: find_config(options, root), lambda: find_weights(options)):
        try:
            path = find()
        except ModusegError as exc:
            found.append(fail(str(exc).removeprefix("proposer 'entityseg' "), ""))
        else:
            found.append(ok(str(path)))
    return found
