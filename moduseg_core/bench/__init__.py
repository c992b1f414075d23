"""``moduseg bench``: the released code's loop and ModuSeg's pipeline, side by side in one process.

On the same images, with the same proposer, the same encoder architecture and weights and
the same bank:

(a) **the released code's way**, re-created from its description (shared/METHOD.md, "What
    the released code does slowly"): one image at a time — decode, propose, encode in
    float32 at batch 1 — then one mask at a time: pad the mask, resize it to the patch grid
    with OpenCV ``INTER_AREA`` on the CPU, pool the tokens; one exact search per image (a
    full sort of every similarity row, on the encoder's device); a ``Counter`` vote per
    mask; NMS with a ``logical_and`` / ``logical_or`` per pair; painting per mask.
(b) **ModuSeg's pipeline** as ``moduseg run`` executes it: images decoded ahead by loader
    workers, encoder batches in the configured dtype, all masks of an image pooled with
    batched products (on the GPU with ``aggregator.device``), batched top-k (on the GPU with
    ``index.device``), box-restricted NMS and painting overlapped with the next batch.

The report gives images/s per stage and end to end, the masks per image, peak GPU memory,
the ratio b/a, whether the two produced the same semantic maps, the encoder's FLOPs per
image against the device's measured matmul rate (the floor), and a projection of bank
building over a VOC-sized training set. Random weights are fine for speed, but they change
how many masks a proposer returns (the report says how many it saw).

The package, one job per module:

- ``released``: (a), the released code's loop, one image and one mask at a time;
- ``measure``: the encoder's FLOP floor, the device's matmul rate, peak GPU memory, the bank-build
  projection and the device's description;
- ``proposal_split``: the ``sam``/``sam2`` proposal stage split into encoder, decoder and
  post-processing for ``engine=library`` and ``engine=fast`` on one model, and their agreement
  (``--engines``; ``benchmarks/bench_proposals.py`` uses it too);
- ``run``: ``run_bench``, which builds the components once and times (b) then (a) on them;
- ``report``: the Markdown table of docs/performance.md.
"""

from moduseg_core.bench.measure import VOC_TRAIN_AUG, bank_projection, encoder_floor, encoder_flops, matmul_rate
from moduseg_core.bench.proposal_split import library_split, parse_engines, split_propose
from moduseg_core.bench.released import LOOP_STAGES, released_loop
from moduseg_core.bench.report import bench_markdown
from moduseg_core.bench.run import framework, run_bench

__all__ = [
    "LOOP_STAGES",
    "VOC_TRAIN_AUG",
    "bank_projection",
    "bench_markdown",
    "encoder_flops",
    "encoder_floor",
    "framework",
    "library_split",
    "parse_engines",
    "matmul_rate",
    "released_loop",
    "run_bench",
    "split_propose",
]
