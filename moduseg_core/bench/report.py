"""The ``moduseg bench`` report as the Markdown table docs/performance.md shows."""

from __future__ import annotations

from typing import Any

from moduseg_core.bench.proposal_split import split_markdown
from moduseg_core.bench.released import LOOP_STAGES


def bench_markdown(report: dict[str, Any]) -> str:
    """The report as the Markdown table docs/performance.md shows."""
    comps = ", ".join(f"{k} `{v['name']}`" for k, v in report["components"].items())
    lines = [
        f"# moduseg bench — {report['device']}",
        "",
        f"{report['images']} images (+{report['warmup']} warm-up), bank {report['bank_size']:,} vectors, {comps}.",
        "",
        "| stage | (a) released loop, img/s | (b) ModuSeg, img/s | b/a |",
        "|---|---:|---:|---:|",
    ]
    n = report["images"]
    loop = report.get("loop")
    stages_b = report["framework"]["stages_s"]
    names = list(LOOP_STAGES) + [s for s in stages_b if s not in LOOP_STAGES and s != "decode (waited)"]
    for stage in names:
        b = stages_b.get(stage)
        a = loop["stages_s"].get(stage) if loop else None
        if stage == "decode":  # (b) decodes in loader workers: what it shows is the time spent waiting
            b = stages_b.get("decode (waited)")
            stage = "decode (b: waited for workers)"
        cell_a = f"{n / a:.2f}" if a else "–"
        cell_b = f"{n / b:.2f}" if b else ("overlapped" if stage == "decode" else "–")
        ratio = f"{a / b:.1f}×" if a and b else "–"
        lines.append(f"| {stage} | {cell_a} | {cell_b} | {ratio} |")
    fw = report["framework"]
    a_total = f"{loop['images_per_s']:.2f}" if loop else "–"
    lines.append(f"| **end to end** | {a_total} | {fw['images_per_s']:.2f} | "
                 f"{report['speedup']:.1f}× |" if loop else f"| **end to end** | – | {fw['images_per_s']:.2f} | – |")
    lines.append("")
    cap = f", at most {report['max_masks']} per image (--max-masks)" if report.get("max_masks") else ""
    lines.append(
        f"Masks per image: {fw['masks_per_image']:.1f}"
        + (f" (loop {loop['masks_per_image']:.1f})" if loop else "")
        + cap
    )
    if fw.get("peak_gpu_gib") is not None:
        lines.append(
            f"Peak GPU memory: (b) {fw['peak_gpu_gib']:.2f} GiB"
            + (f", (a) {loop['peak_gpu_gib']:.2f} GiB" if loop else "")
        )
    if loop:
        lines.append(f"Pooling + retrieval + NMS: {report['speedup_pool_retrieve_nms']:.1f}× (b over a)")
        lines.append(
            f"Identical semantic maps: {report['identical_maps']} (pixel agreement "
            f"{100 * report['pixel_agreement']:.2f}%)"
        )
    floor = report.get("floor")
    if floor and floor.get("flops_per_image"):
        lines += [
            "",
            f"Encoder floor ({floor['dtype']}, batch {floor['batch']}, {floor['image_hw'][0]}×{floor['image_hw'][1]}): "
            f"{floor['flops_per_image'] / 1e9:.1f} GFLOP/image; measured matmul rate "
            f"{floor['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s; "
            f"encoder {floor['images_per_s']:.2f} img/s = {floor['achieved_flops_per_s'] / 1e12:.2f} TFLOP/s = "
            f"**{100 * floor['fraction_of_floor']:.0f}% of the floor** ({floor['floor_images_per_s']:.1f} img/s at "
            "100%).",
        ]
    if report.get("proposal_split"):
        lines += split_markdown(report["proposal_split"])
    bank = report.get("bank_build")
    if bank:
        lines += [
            "",
            f"Bank build: {bank['images']} images in {bank['wall_s']:.1f} s → {bank['for_images']:,} images projected "
            f"{bank['projected_min']:.1f} min ({bank['projected_with_proposer_min']:.1f} min if the labeler also runs "
            "the proposer once per image).",
        ]
    return "\n".join(lines) + "\n"
