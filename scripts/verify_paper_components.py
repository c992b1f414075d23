"""Build the paper's architectures with random weights and check ModuSeg's plugins against the release.

    python scripts/verify_paper_components.py --release /path/to/release --data ../shared/data/coco-mini

Needs, in the Python that runs it: moduseg with its `radio` and `corrclip` extras, detectron2 (built from
source) and nothing of the release installed. `--release` is a checkout of the paper's code
(github.com/Autumnair007/ModuSeg: its `C_RADIOv4_SO400M/` remote code and `CropFormer/` folder). Nothing
is downloaded (HF_HUB_OFFLINE=1): every model is the real architecture with random weights, written to
`--work`.

1. C-RADIOv4-SO400M: the release's model code with random weights, saved as a local hub repository;
   ModuSeg's `radio` encoder vs the release's feature extractor on the same photos (max |diff|).
2. EntitySeg (Mask2Former-HorNet, CropFormer's config) with random weights; ModuSeg's `entityseg`
   proposer vs the release's predictor (masks and scores, score ≥ 0.6). ModuSeg gets a checkpoint that
   also holds a numpy scalar (as trainer checkpoints do), the release one with tensors only.
   The release side runs in its own process (CropFormer registers its models once per process).
3. `moduseg run -c moduseg_core/presets/paper-voc.yaml` end to end on a few photos, every model
   random (CLIP included), float32 on the CPU.

Neither the release nor detectron2 is copied into ModuSeg: they are read from `--release` and the
installed detectron2 at run time. The numbers it printed here are in docs/paper.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "moduseg_core" / "presets" / "paper-voc.yaml"
CONFIG = "configs/entityv2/entity_segmentation/mask2former_hornet_3x.yaml"
RADIO_FILES = ("*.py", "config.json")

#: the release side: its own feature extractor and its own EntitySeg predictor, as its code calls them
RELEASE_SIDE = textwrap.dedent(
    """
    import argparse, json, sys
    import numpy as np, torch
    from PIL import Image
    release, work, images = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sys.path[:0] = [release, work + "/release_stand_ins"]
    from src.feature_extractor_c_radiov4 import CRADIOv4FeatureExtractor
    from CropFormer.demo_mask2former.demo import setup_cfg
    from detectron2.engine.defaults import DefaultPredictor
    torch.set_grad_enabled(False)
    radio = CRADIOv4FeatureExtractor(model_path=work + "/radio/model.safetensors", device=torch.device("cpu"))
    # the release's get_entityseg with MODEL.DEVICE added (it leaves detectron2's default, cuda)
    config = release + "/CropFormer/configs/entityv2/entity_segmentation/mask2former_hornet_3x.yaml"
    opts = ["MODEL.WEIGHTS", work + "/entityseg/release.pth", "MODEL.DEVICE", "cpu"]
    entityseg = DefaultPredictor(setup_cfg(argparse.Namespace(config_file=config, opts=opts)))
    out = {}
    for i, path in enumerate(images):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        x, _ = radio._preprocess_image(rgb)
        tokens, (hp, wp) = radio._forward_tokens(x)
        out[f"tokens{i}"] = tokens[0].reshape(hp, wp, -1).float().numpy()
        with torch.inference_mode():
            predictions = entityseg(rgb[..., ::-1].copy())
        scores = predictions["instances"].scores
        keep = scores >= 0.0  # every query: random weights score few masks above the paper's 0.6
        out[f"masks{i}"] = predictions["instances"].pred_masks[keep].numpy().astype(bool)
        out[f"scores{i}"] = scores[keep].numpy()
    np.savez_compressed(work + "/release.npz", **out)
    """
)

#: what the release needs importable that inference never uses (the same shortcut ModuSeg takes)
MMCV_STAND_IN = "def list_from_file(filename, *args, **kwargs):\n    return open(filename).read().splitlines()\n"
OP_STAND_IN = "def ms_deform_attn_forward(*args):\n    raise RuntimeError('not built')\n"


def say(text: str) -> None:
    print(text, flush=True)


def photos(data: Path, split: str, count: int) -> list[Path]:
    ids = (data / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:count]
    return [data / "JPEGImages" / f"{i}.jpg" for i in ids]


def make_radio(release: Path, work: Path) -> Path:
    """The release's C-RADIOv4-SO400M code with random weights: a local hub repository."""
    import torch
    from safetensors.torch import save_file

    target = work / "radio"
    target.mkdir(parents=True, exist_ok=True)
    for pattern in RADIO_FILES:
        for source in (release / "C_RADIOv4_SO400M").glob(pattern):
            shutil.copy(source, target / source.name)
    sys.path.insert(0, str(target.parent))
    from radio.hf_model import RADIOConfig, RADIOModel  # the release's classes, from the copy in --work

    sys.path.pop(0)
    config = json.loads((target / "config.json").read_text())
    skip = {"auto_map", "architectures", "torch_dtype", "transformers_version"}
    torch.manual_seed(0)
    model = RADIOModel(RADIOConfig(**{k: v for k, v in config.items() if k not in skip}))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(target / "model.safetensors"))
    return target


def make_entityseg(release: Path, work: Path) -> tuple[Path, Path]:
    """Mask2Former-HorNet from CropFormer's config with random weights: the release's file (tensors only) and
    ModuSeg's (the same tensors and a numpy scalar, as a trainer's checkpoint holds)."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.projects.deeplab import add_deeplab_config
    from moduseg_builtins.proposers._entityseg_impl import import_cropformer

    mask2former = import_cropformer(release / "CropFormer")
    cfg = get_cfg()
    add_deeplab_config(cfg)
    mask2former.add_maskformer2_config(cfg)
    cfg.merge_from_file(str(release / "CropFormer" / CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg)
    folder = work / "entityseg"
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    torch.save({"model": state}, folder / "release.pth")
    torch.save({"model": state, "iteration": np.int64(89999)}, folder / "moduseg.pth")
    return folder / "release.pth", folder / "moduseg.pth"


def make_dino(work: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    model = ViTModel(ViTConfig(patch_size=8, image_size=224), add_pooling_layer=False)
    model.save_pretrained(work / "dino")
    return work / "dino"


def release_side(release: Path, work: Path, images: list[Path]) -> dict[str, np.ndarray]:
    stand_ins = work / "release_stand_ins"
    (stand_ins / "mmcv").mkdir(parents=True, exist_ok=True)
    (stand_ins / "mmcv" / "__init__.py").write_text(MMCV_STAND_IN)
    (stand_ins / "MultiScaleDeformableAttention.py").write_text(OP_STAND_IN)
    command = [sys.executable, "-c", RELEASE_SIDE, str(release), str(work), json.dumps([str(p) for p in images])]
    subprocess.run(command, cwd=release, check=True, stdout=subprocess.DEVNULL)
    with np.load(work / "release.npz") as data:
        return dict(data)


def compare(release: Path, work: Path, images: list[Path], radio: Path, weights: Path) -> None:
    import torch

    from moduseg_core import get_component
    from moduseg_core.files.io import read_image

    theirs = release_side(release, work, images)
    encoder = get_component("encoder", "radio", model=str(radio), layers=[-1], device="cpu")
    proposer = get_component(
        "proposer",
        "entityseg",
        cropformer_root=str(release / "CropFormer"),
        weights=str(weights),
        device="cpu",
        score_threshold=0.0,  # every query, as the release side keeps them
    )
    total_masks = same_masks = pixels = differing = 0
    worst_tokens = worst_scores = 0.0
    for i, path in enumerate(images):
        rgb = read_image(path)
        with torch.inference_mode():
            tokens = encoder.encode(rgb).tokens
        ref = theirs[f"tokens{i}"]
        worst_tokens = max(worst_tokens, float(np.abs(np.asarray(tokens) - ref).max()))
        ours = proposer.propose(rgb)
        masks, scores = ours.masks, ours.scores
        ref_masks, ref_scores = theirs[f"masks{i}"], theirs[f"scores{i}"]
        order = np.argsort(-ref_scores, kind="stable")
        ref_masks, ref_scores = ref_masks[order], ref_scores[order]
        say(f"  photo {path.stem}: tokens {tokens.shape} vs {ref.shape}; masks {len(masks)} vs {len(ref_masks)}")
        total_masks += len(ref_masks)
        if len(masks) == len(ref_masks):
            same_masks += int(sum(np.array_equal(a, b) for a, b in zip(masks, ref_masks, strict=True)))
            pixels += ref_masks.size
            differing += int((masks != ref_masks).sum())
            worst_scores = max(worst_scores, float(np.abs(scores - ref_scores).max()) if len(scores) else 0.0)
    say(f"radio vs the release's feature extractor: max |diff| {worst_tokens:.3g} over {len(images)} photos")
    say(
        f"entityseg vs the release's predictor: {same_masks} of {total_masks} masks identical, "
        f"{differing} of {pixels / 1e6:.1f} M pixels differ, scores max |diff| {worst_scores:.3g}"
    )


def end_to_end(
    release: Path, data: Path, work: Path, radio: Path, dino: Path, weights: Path, bank: int, evaluated: int
) -> None:
    from moduseg_core.cli import main

    out = work / "run"
    sets = [
        f"dataset.root={data}",
        "dataset.mask_dir=SegmentationClassVOC",
        "dataset.labels_file=image_labels_voc.json",
        f"bank_limit={bank}",
        f"eval_limit={evaluated}",
        f"proposer.cropformer_root={release / 'CropFormer'}",
        f"proposer.weights={weights}",
        "proposer.dtype=float32",
        "proposer.device=cpu",
        "labeler.pretrained=null",
        f"labeler.dino={dino}",
        "labeler.dtype=float32",
        "labeler.device=cpu",
        "labeler.proposer_options={score_threshold: 0.5, dtype: float32, device: cpu}",
        f"encoder.model={radio}",
        "encoder.device=cpu",
    ]
    args = ["run", "-c", str(PRESET), "--out", str(out), "--overwrite"]
    for item in sets:
        args += ["--set", item]
    say("moduseg " + " ".join(args[:5]) + " ... (" + ", ".join(s.split("=")[0] for s in sets) + ")")
    start = time.perf_counter()
    code = main(args)
    say(
        f"run: exit code {code}, {time.perf_counter() - start:.0f} s for {bank} bank + {evaluated} eval photos "
        "(random weights: the mIoU means nothing)"
    )
    if code != 0:
        raise SystemExit(code)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release", type=Path, required=True, help="checkout of the paper's release")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco-mini")
    parser.add_argument("--work", type=Path, default=Path("runs/verify-paper"), help="random checkpoints and the run")
    parser.add_argument("--photos", type=int, default=2, help="photos compared with the release")
    parser.add_argument("--bank", type=int, default=4, help="bank photos of the end-to-end run")
    parser.add_argument("--eval", type=int, default=2, help="eval photos of the end-to-end run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    release, data, work = args.release.resolve(), args.data.resolve(), args.work.resolve()
    for needed in ("C_RADIOv4_SO400M/hf_model.py", f"CropFormer/{CONFIG}"):
        if not (release / needed).is_file():
            print(
                f"Error: --release {release} has no {needed}; pass a checkout of the paper's release", file=sys.stderr
            )
            return 2
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    radio = make_radio(release, work)
    _, weights = make_entityseg(release, work)
    dino = make_dino(work)
    say(f"random-weight checkpoints in {work} ({time.perf_counter() - start:.0f} s)")
    compare(release, work, photos(data, "val", args.photos), radio, weights)
    end_to_end(release, data, work, radio, dino, weights, args.bank, args.eval)
    say(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
