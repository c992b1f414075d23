"""The ``corrclip`` labeler: open_clip's and transformers' real model classes with random weights, on real
coco-mini photos. Each piece of the rule is checked against a direct computation on a small case, one whole
window against a literal re-computation (sequence-first, boolean attention masks, the blocks written out),
and the labeler end to end for its invariants (random weights: the maps mean nothing)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")
pytest.importorskip("sklearn")

import torch
import torch.nn.functional as F
from contract_builders import save_corrclip_models
from moduseg_builtins.labelers import _corrclip_parts as parts

import moduseg_core as ms
from moduseg_core import ModusegError
from moduseg_core.cli import main
from moduseg_core.contract.types import Proposals, Sample
from moduseg_core.files.io import read_image

FAST = {"templates": ["a photo of a {}."], "short_side": 112, "crop": 112, "stride": 56, "device": "cpu"}


@pytest.fixture(autouse=True)
def builtin_plugins(only_plugins):
    only_plugins("datasets,labelers,proposers", MODUSEG_PROGRESS="0")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_corrclip_models(tmp_path_factory.mktemp("corrclip"))


def make(models, **options):
    clip, dino = models
    settings = {
        "model": f"local-dir:{clip}", "pretrained": None, "dino": str(dino), "proposer": "slic",
        "proposer_options": {"n_segments": [12]}, **FAST, **options,
    }  # fmt: skip
    return ms.get_component("labeler", "corrclip", **settings)


@pytest.fixture(scope="module")
def photo(coco_mini):
    ids = (coco_mini / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    return read_image(coco_mini / "JPEGImages" / f"{ids[0]}.jpg")


# -- the pieces against direct computations ----------------------------------------------------------------


def test_released_defaults():
    spec = ms.contract.plugins.get_spec("labeler", "corrclip")
    d = spec.options()
    assert (d.model, d.pretrained, d.dino, d.proposer) == (
        "ViT-B-16",
        "metaclip_fullcc",
        "facebook/dino-vitb8",
        "entityseg",
    )
    assert (d.alpha, d.beta, d.tau, d.merge_eps, d.merge_min_samples) == (1.0, 0.5, 4.0, 0.2, 1)
    assert (d.crop, d.stride, d.pad_multiple, d.logit_scale, d.min_score, d.short_side) == (
        336,
        112,
        56,
        40.0,
        0.5,
        336,
    )
    assert spec.extra == "corrclip" and not spec.oracle


def test_instance_map_keeps_masks_above_the_score_and_puts_the_higher_score_on_top():
    masks = np.zeros((4, 3, 4), bool)
    masks[0, :, :2] = True  # 0.9
    masks[1, :, 1:3] = True  # 0.6, overlaps mask 0 in column 1
    masks[2, 0, :] = True  # 0.3: below min_score
    masks[3, 2, 3] = True  # 0.95
    ids = parts.instance_map(Proposals(masks, np.array([0.9, 0.6, 0.3, 0.95], np.float32)), 0.5)
    expected = np.array([[1, 1, 2, 0], [1, 1, 2, 0], [1, 1, 2, 3]])  # kept masks 0, 1, 3 → ids 1, 2, 3
    assert np.array_equal(ids, expected)


def _components(distance: np.ndarray, eps: float) -> list[int]:
    """DBSCAN with min_samples=1 written out: connected components of ``distance <= eps``, numbered in
    order of their first member."""
    labels = [-1] * len(distance)
    current = 0
    for start in range(len(distance)):
        if labels[start] != -1:
            continue
        stack, labels[start] = [start], current
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(distance[i] <= eps):
                if labels[j] == -1:
                    labels[j] = current
                    stack.append(j)
        current += 1
    return labels


@pytest.mark.parametrize("eps", [0.01, 0.2, 0.6, 3.0])
def test_merge_regions_is_dbscan_over_region_means(eps):
    gen = torch.Generator().manual_seed(1)
    ids = torch.tensor([[0, 0, 1, 1, 2], [0, 3, 1, 1, 2], [4, 3, 3, 5, 5], [4, 4, 5, 5, 5]])
    base = F.normalize(torch.randn(3, 8, generator=gen), dim=1)
    # regions 1 and 3 share a direction, 2 and 5 another, 4 a third
    direction = {0: base[0], 1: base[1], 2: base[2], 3: base[1], 4: base[0] * -1, 5: base[2]}
    feats = torch.stack([direction[int(v)] for v in ids.reshape(-1)]).reshape(4, 5, 8)
    feats = F.normalize(feats + 0.05 * torch.randn(feats.shape, generator=gen), dim=-1)
    merged = parts.merge_regions(ids, feats, eps, 1)

    values = sorted(set(ids.reshape(-1).tolist()))
    means = torch.stack([feats[ids == v].mean(0) for v in values])
    means = F.normalize(means, dim=1)[1:]
    sim = (means @ means.T).double().numpy()
    clusters = _components(sim.max() - sim, eps)
    for value, cluster in zip(values[1:], clusters, strict=True):
        assert torch.all(merged[ids == value] == 6 + cluster)
    assert torch.all(merged[ids == 0] == 0)  # the smallest id ("no mask") is never merged
    if eps >= 3.0:
        assert len(torch.unique(merged)) == 2
    two = torch.tensor([[0, 1], [1, 1]])
    assert torch.equal(parts.merge_regions(two, feats[:2, :2], eps, 1), two)  # two regions: nothing to merge


def test_scope_attention_against_loops():
    gen = torch.Generator().manual_seed(2)
    feats = F.normalize(torch.randn(10, 6, generator=gen), dim=1)
    sim = feats @ feats.T
    ids = torch.tensor([3, 3, 5, 7, 7, 7, 3, 9, 5, 9])  # 3 is the smallest id: "no mask"
    got = parts.scope_attention(sim, ids, 4.0)
    mean = sim.mean()
    for i in range(10):
        allowed = []
        for j in range(10):
            own = ids[i] == ids[j] and ids[i] != 3
            loose = (ids[i] == 3 or ids[j] == 3) and sim[i, j] > mean
            allowed.append(bool(own or loose))
        allowed = torch.tensor(allowed)
        row = torch.zeros(10)
        row[allowed] = torch.softmax(4.0 * sim[i, allowed], dim=0)
        assert torch.allclose(got[i], row, atol=1e-6)


def test_semantic_attention_mask():
    regions = torch.tensor([[True, False, True], [False, True, False]])
    mask = parts.semantic_attention_mask(regions, torch.float32)
    allowed = mask == 0
    # rows: region 0, region 1, CLS, patch 0..2; columns the same
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 0, 1],
            [0, 0, 1, 0, 1, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)
    assert torch.isinf(mask[~allowed]).all() and (mask[~allowed] < 0).all()


def test_spatial_blocks_are_the_released_counts():
    assert list(parts.spatial_blocks(12, None)) == [5, 6, 7, 8, 9]  # ViT-B: 5 blocks, the last two left out
    assert list(parts.spatial_blocks(24, None)) == list(range(10, 22))
    assert list(parts.spatial_blocks(32, None)) == list(range(2, 30))
    assert list(parts.spatial_blocks(4, None)) == [1]
    assert list(parts.spatial_blocks(12, 2)) == [8, 9]
    with pytest.raises(ValueError, match="at least 3 blocks"):
        parts.spatial_blocks(2, None)


def test_correction_by_regions_leaves_the_smallest_id_and_breaks_ties_low():
    classes = np.array([[5, 5, 2, 2], [5, 7, 7, 2], [9, 9, 9, 9]])
    ids = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 3, 3]])
    out = parts.correct_by_regions(classes, ids)
    expected = np.array([[5, 5, 2, 2], [5, 2, 2, 2], [9, 9, 9, 9]])  # region 1: 2 ×3 beats 7 ×2
    assert np.array_equal(out, expected)
    tie = parts.correct_by_regions(np.array([[4, 1]]), np.array([[1, 1]]))  # smallest id 1 is left alone
    assert np.array_equal(tie, np.array([[4, 1]]))
    assert np.array_equal(parts.correct_by_regions(np.array([[4, 1, 0]]), np.array([[0, 2, 2]])), np.array([[4, 0, 0]]))


def test_resize_grid_and_padding():
    grid = torch.randn(5, 4, 4)
    assert torch.equal(parts.resize_grid(grid, (4, 4)), grid)
    out = parts.resize_grid(grid, (7, 3))
    direct = F.interpolate(grid[None], scale_factor=(7.1 / 4, 3.1 / 4), mode="bicubic", align_corners=False)[0]
    assert out.shape == (5, 7, 3) and torch.allclose(out, direct)
    assert parts.symmetric_pad(300, 336, 56) == (0, 0, 18, 18)
    assert parts.symmetric_pad(301, 57, 56) == (27, 28, 17, 18)  # to 112 wide, 336 high


# -- one window against a literal re-computation ---------------------------------------------------------


def _literal_block(block, x, mask):
    """An open_clip residual block on a sequence-first ``x`` with a boolean mask (True = may not attend)."""
    y = block.ln_1(x).transpose(0, 1)
    a = block.attn(y, y, y, need_weights=False, attn_mask=mask)[0].transpose(0, 1)
    x = x + a
    return x + block.mlp(block.ln_2(x))


def _literal_window(labeler, pixels, ids):
    o = labeler.options
    # DINO's last-block query and key through the model's own forward (hooks), at its native size
    captured = {}
    layer = labeler._dino_layers()[-1]
    q_mod = layer.attention.q_proj if hasattr(layer.attention, "q_proj") else layer.attention.attention.query
    k_mod = layer.attention.k_proj if hasattr(layer.attention, "k_proj") else layer.attention.attention.key
    hooks = [
        q_mod.register_forward_hook(lambda m, i, out: captured.__setitem__("q", out)),
        k_mod.register_forward_hook(lambda m, i, out: captured.__setitem__("k", out)),
    ]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.inference_mode():
        labeler.dino(pixel_values=((pixels - mean) / std)[None])
    for h in hooks:
        h.remove()
    feat_shape = (pixels.shape[1] // 8, pixels.shape[2] // 8)
    dino = F.normalize((captured["q"] + captured["k"])[0, 1:], dim=-1)
    similarity = dino @ dino.T
    masks = F.interpolate(ids[None, None].float(), size=feat_shape, mode="nearest")[0, 0].long()
    values = torch.unique(masks)
    if len(values) > 2:
        from sklearn.cluster import DBSCAN

        regions = [masks == v for v in values]
        grid = dino.reshape(*feat_shape, -1)
        means = F.normalize(torch.stack([grid[r].mean(0) for r in regions]), dim=1)[1:]
        sim = means @ means.T
        clusters = DBSCAN(eps=o.merge_eps, min_samples=1, metric="precomputed").fit_predict((sim.max() - sim).numpy())
        for index, cluster in enumerate(clusters, start=1):
            masks[regions[index]] = int(cluster) + 10000
    regions = [(masks == v).reshape(-1) for v in torch.unique(masks)]
    equal = torch.zeros_like(similarity, dtype=torch.bool)
    for r in regions[1:]:
        equal |= torch.outer(r, r)
    first = regions[0]
    equal |= (first[None, :] | first[:, None]) & (similarity > similarity.mean())
    similarity = similarity.masked_fill(~equal, float("-inf"))
    attention = (similarity * o.tau).softmax(dim=-1)

    v = labeler.visual
    norm_mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    norm_std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    x = v.conv1(((pixels - norm_mean) / norm_std)[None])
    token_size = x.shape[2:]
    x = x.reshape(1, x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([v.class_embedding.view(1, 1, -1), x], dim=1) + v.positional_embedding  # native size
    x = v.ln_pre(x).permute(1, 0, 2)  # sequence first
    small = F.interpolate(masks[None, None].float(), size=token_size, mode="nearest")[0, 0].long()
    region_masks = torch.stack([small == value for value in torch.unique(small)])
    count = len(region_masks)
    x = torch.cat([x[:1].repeat(count, 1, 1), x], dim=0)
    allowed = torch.zeros((x.shape[0], x.shape[0]), dtype=torch.bool)
    allowed[count:, count:] = True
    allowed[:count, count] = True
    allowed[:count, count + 1 :] = region_masks.reshape(count, -1)
    block_mask = ~allowed
    blocks = v.transformer.resblocks
    depth = len(blocks)
    n_spatial = {12: 5, 24: 12, 32: 28}.get(depth, max(1, depth - 4))
    spatial = []
    for index, block in enumerate(blocks[:-1]):
        x = _literal_block(block, x, block_mask)
        if depth - 2 - n_spatial <= index <= depth - 3:
            spatial.append(x[count:])
    last = blocks[-1]
    both = torch.cat([x[count:], torch.stack(spatial).mean(0)], dim=1)  # L×2×C
    width = last.attn.embed_dim
    values_v = F.linear(last.ln_1(both), last.attn.in_proj_weight[2 * width :], last.attn.in_proj_bias[2 * width :])
    values_v = values_v.permute(1, 2, 0)[:, :, 1:].unflatten(2, tuple(token_size))
    values_v = F.interpolate(values_v, size=feat_shape, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    main_spatial = last.attn.out_proj(torch.bmm(attention.expand(2, -1, -1), values_v).transpose(0, 1))
    tokens = _literal_block(last, x, block_mask)[:count, 0]
    expand = F.interpolate(region_masks[:, None].float(), size=feat_shape, mode="nearest").flatten(1)
    semantic = (expand.T @ tokens)[:, None]
    out = v.ln_post(torch.cat([main_spatial, semantic], dim=1).permute(1, 0, 2))
    out = out[0] + o.alpha * out[1] + o.beta * out[2]
    return F.normalize(out @ v.proj, dim=-1)


@pytest.mark.parametrize("eps", [0.2, 3.0])
def test_window_equals_the_literal_computation(models, photo, eps):
    labeler = make(models, merge_eps=eps)
    pixels = torch.from_numpy(photo[100:164, 200:264].copy()).permute(2, 0, 1).float() / 255.0  # both models' native 64
    ids = torch.zeros(64, 64, dtype=torch.long)
    ids[:40, :30] = 1
    ids[:40, 30:] = 2
    ids[40:, 10:50] = 3
    ids[50:, 50:] = 4  # and 0 ("no mask") where none of them is
    with torch.inference_mode():
        got = labeler.window_features(pixels, ids).reshape(-1, labeler.text.shape[1])
        want = _literal_window(labeler, pixels, ids)
    assert got.shape == want.shape == (64, 32)
    assert torch.allclose(got, want, atol=2e-5), float((got - want).abs().max())


def test_bfloat16_agrees_with_float32(models, photo):
    pixels = torch.from_numpy(photo[:112, :112].copy()).permute(2, 0, 1).float() / 255.0
    ids = torch.zeros(112, 112, dtype=torch.long)
    ids[:60, :60], ids[60:, 30:] = 1, 2
    with torch.inference_mode():
        full = make(models).window_features(pixels, ids)
        half = make(models, dtype="bfloat16").window_features(pixels, ids)
    cosine = (full * half).sum(-1)
    assert full.shape == half.shape and float(cosine.mean()) > 0.99, float(cosine.mean())


# -- the labeler end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples(coco_mini):
    labels = json.loads((coco_mini / "image_labels_voc.json").read_text())
    ids = (coco_mini / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    several = [i for i in ids if len(labels.get(i, [])) >= 2][:2]
    empty = [i for i in ids if i in labels and not labels[i]][:1]
    return [
        Sample(id=i, image_path=coco_mini / "JPEGImages" / f"{i}.jpg", labels=tuple(labels[i])) for i in several + empty
    ]


@pytest.mark.slow
def test_only_image_labels_and_every_pixel_classified(models, samples):
    labeler = make(models, classes="voc")
    for sample in samples:
        image = read_image(sample.image_path)
        out = labeler.label(image, sample)
        assert out.shape == image.shape[:2] and out.dtype == np.int32
        assert set(np.unique(out).tolist()) <= {0, *sample.labels}  # never a class outside the labels; no 255
    # the map correction: every mask region (of the instance map) is one class
    sample = samples[0]
    image = read_image(sample.image_path)
    out = labeler.label(image, sample)
    ids = parts.instance_map(labeler.corrector.propose(image, image_id=sample.id), 0.5)
    for value in np.unique(ids)[1:]:
        assert len(np.unique(out[ids == value])) == 1


def test_one_line_errors(models):
    with pytest.raises(ModusegError, match=r"pad_multiple=60 is not a multiple of the DINO patch size 8"):
        make(models, pad_multiple=60)
    with pytest.raises(ModusegError, match=r"stride=200 exceeds crop=112"):
        make(models, stride=200)
    with pytest.raises(ModusegError, match=r"proposer='nope' is not a registered proposer"):
        make(models, proposer="nope")
    with pytest.raises(ModusegError, match=r"does not exist"):
        make(models, dino="/no/such/dino")


@pytest.mark.slow
def test_evaluate_labels_runs_with_corrclip(models, coco_mini, tmp_path, capsys):
    clip, dino = models
    out = tmp_path / "labels"
    code = main([
        "evaluate-labels", "--dataset", "voc", "--set", f"dataset.root={coco_mini}",
        "--set", "dataset.mask_dir=SegmentationClassVOC", "--set", "dataset.labels_file=image_labels_voc.json",
        "--set", "dataset.classes=voc", "--labeler", "corrclip", "--set", f"labeler.model=local-dir:{clip}",
        "--set", "labeler.pretrained=null", "--set", f"labeler.dino={dino}", "--set", "labeler.proposer=slic",
        "--set", "labeler.proposer_options={n_segments: [12]}", "--set", "labeler.templates=['a photo of a {}.']",
        "--set", "labeler.short_side=112", "--set", "labeler.crop=112", "--set", "labeler.stride=56",
        "--set", "labeler.device=cpu", "--limit", "2", "--out", str(out),
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "labels_report.json").read_text())
    assert report["dataset"]["images"] == 2 and report["labeler"]["name"] == "corrclip"
    assert report["pixels_outside_labels"] == 0 and report["oracle"] is False
