"""``Sam2Proposer``: sam2's ``SAM2AutomaticMaskGenerator`` behind the MaskProposer protocol.

The model is built by sam2's own ``build_sam2`` from a config shipped with sam2 (a local YAML
file is composed the same way with OmegaConf + ``hydra.utils.instantiate``). Hub ids are the
ones ``SAM2AutomaticMaskGenerator.from_pretrained`` accepts; their checkpoint is fetched with
``huggingface_hub.hf_hub_download`` (so ``HF_HUB_OFFLINE=1`` and the local cache work), exactly
the files ``from_pretrained`` would use. Checkpoints are read with ``weights_only=True`` and must
match the config key for key.
"""

from __future__ import annotations

from pathlib import Path

import torch

from moduseg_core import ModusegError
from moduseg_core.contract.errors import did_you_mean

from .._shared import resolve_device, short_reason
from ._fast_amg import GeneratorProposer
from ._torch_common import autocast, load_every_key, mask_generator, read_state_dict
from .sam2 import RANDOM, Sam2Options

#: What ``build_sam2(apply_postprocessing=True)`` sets; applied to local YAML configs as well.
_POSTPROCESSING = {
    "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
}


def hub_models() -> dict[str, tuple[str, str]]:
    """hub id → (sam2 config name, checkpoint file name), as sam2 itself defines them."""
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    return dict(HF_MODEL_ID_TO_FILENAMES)


def package_configs() -> list[str]:
    """Config names shipped with the installed sam2, relative to the package (``configs/sam2.1/...``)."""
    import sam2

    root = Path(sam2.__file__).parent
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def resolve_config(config: str) -> tuple[str, Path | None]:
    """→ (sam2 config name, None) or (the path, local YAML file)."""
    path = Path(config).expanduser()
    if path.is_file():
        return str(path), path
    names = package_configs()
    if config in names:
        return config, None
    stem = config[:-5] if config.endswith(".yaml") else config
    matches = [n for n in names if n.startswith("configs/") and Path(n).stem == stem]
    if len(matches) == 1:
        return matches[0], None
    shipped = [n for n in names if n.startswith("configs/") and "training" not in n]
    raise ModusegError(
        f"sam2 config {config!r} is neither a YAML file nor a config shipped with sam2"
        f"{did_you_mean(config, names)} (shipped: {', '.join(shipped)}); fix --set proposer.config=..."
    )


def resolve_model(options: Sam2Options) -> tuple[str, Path | None]:
    """→ (config, checkpoint path or None for random weights)."""
    model, config = options.model, options.config
    if model == RANDOM:
        if config is None:
            raise ModusegError(
                "proposer 'sam2' with model='random' needs a config to build, e.g. "
                "--set proposer.config=configs/sam2.1/sam2.1_hiera_t.yaml"
            )
        return config, None
    known = hub_models()
    if model in known:
        default_config, filename = known[model]
        return config or default_config, _hf_checkpoint(model, filename)
    path = Path(model).expanduser()
    if path.is_file():
        if config is None:
            by_file = {name: cfg for cfg, name in known.values()}
            if path.name not in by_file:
                raise ModusegError(
                    f"sam2 checkpoint {path.name!r} is not a released file name, so its config is unknown; "
                    "set --set proposer.config=configs/sam2.1/sam2.1_hiera_<t|s|b+|l>.yaml to match it"
                )
            config = by_file[path.name]
        return config, path
    if path.exists():
        raise ModusegError(f"sam2 model {model!r} is a directory; point model at a checkpoint file (.pt)")
    raise ModusegError(
        f"sam2 model {model!r} is neither a known hub id{did_you_mean(model, known)} nor an existing checkpoint file "
        f"(hub ids: {', '.join(known)}; or a local .pt, or {RANDOM!r} with a config)"
    )


def _hf_checkpoint(model: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=model, filename=filename))
    except Exception as exc:  # offline and not cached, gated, interrupted...
        raise ModusegError(
            f"could not fetch {filename} of {model} from the Hugging Face hub or its local cache "
            f"({short_reason(exc)}); "
            f"on a connected machine run `hf download {model} {filename}` and copy the cache, "
            f"or pass --set proposer.model=/path/to/{filename}"
        ) from exc


def build_model(config: str, image_size: int | None) -> torch.nn.Module:
    """A randomly initialised ``SAM2Base`` from a sam2 config name (``build_sam2``) or a local YAML file."""
    from sam2.build_sam import build_sam2

    name, local = resolve_config(config)
    try:
        if local is None:
            overrides = [f"++model.image_size={image_size}"] if image_size else []
            return build_sam2(name, None, device="cpu", mode="eval", hydra_overrides_extra=overrides)
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(local)
        if "model" not in cfg:
            raise ModusegError(f"sam2 config {local} has no top-level 'model' section; use a sam2 model config")
        for key, value in _POSTPROCESSING.items():
            OmegaConf.update(cfg, key, value, force_add=True)
        if image_size:
            OmegaConf.update(cfg, "model.image_size", image_size, force_add=True)
        OmegaConf.resolve(cfg)
        return instantiate(cfg.model, _recursive_=True).eval()
    except ModusegError:
        raise
    except Exception as exc:
        raise ModusegError(
            f"could not build a SAM 2 model from config {config!r} ({short_reason(exc)}); use a sam2 model config"
        ) from exc


def load_sam2(options: Sam2Options) -> torch.nn.Module:
    config, checkpoint = resolve_model(options)
    model = build_model(config, options.image_size)
    if checkpoint is None:
        return model
    state = read_state_dict(checkpoint, "SAM 2 checkpoint")
    load_every_key(
        model, state, mismatch=f"SAM 2 checkpoint {checkpoint} does not fit config {config!r}",
        fix="set --set proposer.config=... to the config it was trained with",
    )
    return model


class Sam2Proposer(GeneratorProposer):
    """Class-agnostic SAM 2 masks; ``model`` may be passed in (an already built ``SAM2Base``)."""

    name = "sam2"

    def __init__(self, options: Sam2Options, model: torch.nn.Module | None = None):
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        self.options = options
        self.device = resolve_device(options.device, f"proposer {self.name!r}")
        if model is None:
            model = load_sam2(options)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.generator = mask_generator(
            SAM2AutomaticMaskGenerator, self.model, options, self.name, "mask_threshold", "use_m2m", "multimask_output"
        )
        # SAM2ImagePredictor assumes the 1024-pixel input's feature sizes (256, 128, 64); derive them from
        # the model so configs with another image_size run too (identical values at 1024).
        side = int(self.model.sam_image_embedding_size)
        self.generator.predictor._bb_feat_sizes = [(4 * side, 4 * side), (2 * side, 2 * side), (side, side)]
        self._engine(sam2=True)

    def __repr__(self) -> str:
        return (
            f"Sam2Proposer(model={self.options.model!r}, image_size={self.model.image_size}, "
            f"points_per_side={self.options.points_per_side}, device={self.device}, dtype={self.options.dtype})"
        )

    def _precision(self):
        return autocast(self.device, self.options.dtype)
