"""Bytes per image of stored proposals: the one proposal format (np.packbits of the flattened masks in a
deflated .npz, ``moduseg_core.files.proposal_files``) against COCO RLE (pycocotools, the counts as JSON text) and
bounding boxes + packed crops, on the SLIC proposals of the first coco-mini val images.

    .venv/bin/python benchmarks/proposal_sizes.py
"""
import io
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mu

import moduseg_core as ms
from moduseg_core.files.io import read_image
from moduseg_core.files.proposal_files import write_packed

data = Path("../shared/data/coco-mini")
ids = (data / "ImageSets/Segmentation/val.txt").read_text().split()[:5]
p=ms.get_component("proposer","slic")
tot={"raw":0,"packed_npz":0,"rle_json":0,"crops":0}
for i in ids:
    im = read_image(data / "JPEGImages" / f"{i}.jpg")
    pr = p.propose(im)
    m = pr.masks
    tot["raw"] += m.size
    b = io.BytesIO()
    write_packed(b, pr)
    tot["packed_npz"] += len(b.getvalue())
    rles=mu.encode(np.asfortranarray(m.transpose(1,2,0).astype(np.uint8)))
    tot["rle_json"]+=len(json.dumps([r["counts"].decode() for r in rles]))
    # boxes + cropped packbits, deflated
    parts, boxes = [], []
    for k in range(len(m)):
        ys, xs = np.nonzero(m[k])
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        parts.append(np.packbits(m[k, y0:y1, x0:x1]))
        boxes.append((y0, y1, x0, x1))
    b2 = io.BytesIO()
    np.savez_compressed(b2, bits=np.concatenate(parts), boxes=np.array(boxes, np.int32), scores=pr.scores)
    tot["crops"] += len(b2.getvalue())
    print(i, len(m), m.shape)
print({k: f"{v/1e6:.3f} MB" for k,v in tot.items()})
