"""What ``moduseg doctor`` checks for the CLIP-based labelers (light: no torch, no open_clip unless offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moduseg_core.doctor.checks import Check, fail, hf_cached_file, hf_model, hf_offline, hub_reachable, ok


def _open_clip_cached(model: str, tag: str) -> bool | None:
    """Whether open_clip's weights for ``model``/``tag`` are in the hub cache; None when it cannot tell."""
    try:
        from open_clip.pretrained import get_pretrained_cfg
    except Exception:  # noqa: BLE001 - open_clip missing is reported by the requirements check
        return None
    cfg = get_pretrained_cfg(model, tag) or {}
    repo = str(cfg.get("hf_hub") or "").strip("/")
    if not repo:
        return None
    files = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_config.json")
    return any(hf_cached_file(repo, name) is not None for name in files)


def clip_weights(options: Any, label: str = "labeler") -> Check:
    """The CLIP weights of a ``clip``/``corrclip`` labeler: random, a file, an hf-hub:/local-dir: model or a tag."""
    model, pretrained = options.model, options.pretrained
    if model.startswith("hf-hub:"):
        return hf_model(model.removeprefix("hf-hub:"), "clip", filename="open_clip_config.json")
    if model.startswith("local-dir:"):
        folder = Path(model.removeprefix("local-dir:")).expanduser()
        return (
            ok(f"clip {folder}")
            if folder.is_dir()
            else fail(f"clip folder {folder} does not exist", f"--set {label}.model=...")
        )
    if pretrained is None:
        return ok(f"clip {model} with random weights (tests only: the maps mean nothing)")
    if Path(pretrained).expanduser().is_file():
        return ok(f"clip {model} from {pretrained}")
    if "/" in pretrained or pretrained.startswith("."):
        return fail(
            f"clip checkpoint {pretrained!r} does not exist", f"--set {label}.pretrained=an existing file or a tag"
        )
    if not hf_offline() and hub_reachable():
        return ok(f"clip {model} {pretrained} (downloaded on first use unless cached)")
    cached = _open_clip_cached(model, pretrained)
    if cached is False:
        return fail(
            f"clip {model} {pretrained} is not in the Hugging Face cache and the hub is off or unreachable",
            f"run once on a connected machine and copy the Hugging Face cache, or --set {label}.pretrained=FILE",
        )
    return ok(f"clip {model} {pretrained}" + (" (cached)" if cached else ""))


def corrclip_checks(options: Any) -> list[Check]:
    """CLIP, DINO and the proposer whose masks the labeler uses (checked as a component of its own)."""
    from moduseg_core.contract.config import Choice
    from moduseg_core.doctor.run import component_checks

    found = [clip_weights(options), hf_model(options.dino, "dino")]
    inner = component_checks(
        "proposer", Choice(name=options.proposer, options=options.proposer_options), label="labeler.proposer_options"
    )
    found += [type(c)(c.ok, f"{options.proposer}: {c.message}", c.fix) for c in inner]
    return found
