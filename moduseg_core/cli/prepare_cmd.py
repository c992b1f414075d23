"""`moduseg prepare coco|voc|ade20k|cityscapes`: parse the arguments, call ``moduseg_core.prepare``, print."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from moduseg_core.cli.common import OverwriteOpt
from moduseg_core.contract.errors import ModusegError

app = typer.Typer(
    help="Write the layouts the dataset plugins read from the official downloads (docs/prepare.md).",
    no_args_is_help=True,
)

PrepOutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help=(
            "Dataset root to write: new, empty, or an earlier output of the same command (images are linked, not "
            "copied)."
        ),
    ),
]


class Crowd(str, Enum):
    class_ = "class"
    ignore = "ignore"


class Overlap(str, Enum):
    order = "order"
    area = "area"


def _print(result: dict[str, Any], out: Path, use: str) -> None:
    for line in result["lines"]:
        typer.echo(line)
    typer.echo(f"summary: {out / 'prepare_summary.json'}")
    typer.echo(f"use it: {use}")


@app.command("coco")
def coco(
    annotations: Annotated[
        list[Path],
        typer.Option("--annotations", "-a", help="instances_{train,val}2014.json (or 2017); repeat for each split."),
    ],
    images: Annotated[
        Path, typer.Option("--images", help="Folder holding train2014/ val2014/ ... (or one split's images).")
    ],
    out: PrepOutOpt,
    crowd: Annotated[
        Crowd, typer.Option("--crowd", help="Crowd regions (iscrowd=1) carry their class, or 255 (ignore).")
    ] = Crowd.class_,
    overlap: Annotated[
        Overlap,
        typer.Option(
            "--overlap",
            help="Overlapping instances: order = a later annotation in the file wins; area = smaller instances on top.",
        ),
    ] = Overlap.order,
    keep_empty: Annotated[
        bool, typer.Option("--keep-empty", help="Also write images without annotations (all-background masks).")
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """COCO instances JSON → semantic masks (0 background, 1..80 in category-id order), labels, split lists."""
    import importlib.util

    if importlib.util.find_spec("pycocotools") is None:
        raise ModusegError("prepare coco needs pycocotools; install it with pip install 'moduseg[prepare]'")
    from moduseg_core.prepare.coco import prepare_coco

    result = prepare_coco(
        annotations, images, out, crowd=crowd.value, overlap=overlap.value, keep_empty=keep_empty, overwrite=overwrite
    )
    split = next(iter(result["splits"]))
    split = {"train2014": "train", "val2014": "val"}.get(split, split)  # the coco plugin's names for 2014
    _print(result, out, f"--dataset coco --set dataset.root={out} --set dataset.split={split}")


@app.command("voc")
def voc(
    root: Annotated[Path, typer.Option("--root", help="VOC2012 folder (JPEGImages/, SegmentationClass/, ImageSets/).")],
    out: PrepOutOpt,
    aug: Annotated[
        Path | None, typer.Option("--aug", help="SBD's SegmentationClassAug folder: adds the train_aug split.")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """PASCAL VOC 2012 (+ SegmentationClassAug) → image-level labels of train / train_aug / val from the masks."""
    from moduseg_core.prepare.voc import prepare_voc

    result = prepare_voc(root, out, aug=aug, overwrite=overwrite)
    split = "train_aug" if aug is not None else "train"
    _print(result, out, f"--dataset voc --set dataset.root={out} --set dataset.split={split}")


class Unlabeled(str, Enum):
    ignore = "ignore"
    background = "background"


@app.command("ade20k")
def ade20k(
    root: Annotated[Path, typer.Option("--root", help="ADEChallengeData2016 folder (images/, annotations/).")],
    out: PrepOutOpt,
    unlabeled: Annotated[
        Unlabeled,
        typer.Option(
            "--unlabeled", help="ADE20K's 0 (other): ignore = 255, not scored (official); background = class 0."
        ),
    ] = Unlabeled.ignore,
    overwrite: OverwriteOpt = False,
) -> None:
    """ADE20K (150 classes, 0 = other) → masks with 0 as ignore or background, image-level labels."""
    from moduseg_core.prepare.ade20k import prepare_ade20k

    result = prepare_ade20k(root, out, unlabeled=unlabeled.value, overwrite=overwrite)
    _print(result, out, f"--dataset ade20k --set dataset.root={out} --set dataset.unlabeled={unlabeled.value}")


@app.command("cityscapes")
def cityscapes(
    root: Annotated[
        Path, typer.Option("--root", help="Cityscapes folder (leftImg8bit/, gtFine/ with *_gtFine_labelIds.png).")
    ],
    out: PrepOutOpt,
    void: Annotated[
        Unlabeled,
        typer.Option(
            "--void", help="Void pixels (train id 255): ignore = not scored (official); background = class 0."
        ),
    ] = Unlabeled.ignore,
    overwrite: OverwriteOpt = False,
) -> None:
    """Cityscapes label ids → the 19 train ids (as 1..19), void as ignore or background, image-level labels."""
    from moduseg_core.prepare.cityscapes import prepare_cityscapes

    result = prepare_cityscapes(root, out, void=void.value, overwrite=overwrite)
    _print(result, out, f"--dataset cityscapes --set dataset.root={out} --set dataset.void={void.value}")
