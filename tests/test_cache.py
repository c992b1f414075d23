"""The stage cache: keys, atomic entries, entry formats, a cache-aware real proposer, and
`moduseg cache list | size | prune`."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from moduseg_core.cache import (
    CachedProposer,
    StageCache,
    fingerprint,
    image_digest,
    load_features,
    load_prediction,
    load_proposals,
    save_features,
    save_prediction,
    save_proposals,
)
from moduseg_core.cli import main
from moduseg_core.contract.components import build
from moduseg_core.contract.config import Choice
from moduseg_core.contract.types import FeatureMap, Geometry, Prediction, Proposals
from moduseg_core.files.io import read_image


@pytest.fixture()
def cache(tmp_path) -> StageCache:
    return StageCache(tmp_path / "stages")


def test_keys_are_content_fingerprints(cache):
    a = cache.key("features", {"encoder": {"name": "dinov2", "options": {"layers": [9]}}, "image": "abc"})
    assert a == cache.key("features", {"image": "abc", "encoder": {"options": {"layers": [9]}, "name": "dinov2"}})
    assert a != cache.key("features", {"encoder": {"name": "dinov2", "options": {"layers": [10]}}, "image": "abc"})
    assert a != cache.key("pooled", {"encoder": {"name": "dinov2", "options": {"layers": [9]}}, "image": "abc"})
    assert len(a) == 64 and fingerprint({"x": 1}) == fingerprint({"x": 1})
    image = np.zeros((4, 5, 3), np.uint8)
    other = image.copy()
    other[0, 0, 0] = 1
    assert image_digest(image) == image_digest(image.copy()) != image_digest(other)
    assert image_digest(image) != image_digest(np.zeros((5, 4, 3), np.uint8))  # same bytes, other shape


def test_entries_are_atomic_and_counted(cache):
    key = cache.key("scores", {"p": 1})
    assert cache.get("scores", key) is None
    with pytest.raises(RuntimeError):
        with cache.put("scores", key) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed while writing")
    assert cache.get("scores", key) is None
    assert not any(cache.root.rglob("*.tmp")), "a failed write left a temporary behind"
    with cache.put("scores", key) as tmp:
        tmp.write_text("{}")
    assert cache.get("scores", key).read_text() == "{}"
    assert cache.counts() == {"scores": {"hit": 1, "miss": 2}}


def test_entry_formats_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    masks = rng.random((5, 13, 17)) < 0.3
    proposals = Proposals(masks, rng.random(5).astype(np.float32))
    save_proposals(tmp_path / "p.npz", proposals)
    back = load_proposals(tmp_path / "p.npz")
    assert np.array_equal(back.masks, masks) and np.array_equal(back.scores, proposals.scores)

    geometry = Geometry.resized(30, 40, 21, 28, 14)
    tokens = rng.standard_normal((*geometry.grid_hw, 8)).astype(np.float32)
    save_features(tmp_path / "f.npz", FeatureMap(tokens, geometry))
    loaded = load_features(tmp_path / "f.npz")
    assert loaded.geometry == geometry and np.array_equal(loaded.tokens, tokens)

    semantic = rng.integers(0, 21, (13, 17)).astype(np.int32)
    prediction = Prediction(semantic, masks[:2], np.array([3, 0], np.int32), np.array([0.9, 0.5], np.float32))
    save_prediction(tmp_path / "x.png", prediction, seen=7)
    again, seen = load_prediction(tmp_path / "x.png")
    assert np.array_equal(again.semantic, semantic) and seen == 7
    assert again.labels.tolist() == [3, 0] and np.allclose(again.scores, [0.9, 0.5])


def test_proposal_entries_are_the_precomputed_format_and_old_entries_still_load(tmp_path):
    from moduseg_builtins.proposers.precomputed import load_proposals as read_precomputed

    rng = np.random.default_rng(1)
    masks = rng.random((3, 7, 9)) > 0.5
    scores = np.array([0.9, 0.5, 0.1], np.float32)
    save_proposals(tmp_path / "new.npz", Proposals(masks, scores))
    with np.load(tmp_path / "new.npz") as data:  # the documented packed layout: the flattened masks
        assert data["packed"].ndim == 1 and list(data["shape"]) == [3, 7, 9]
    read = read_precomputed(tmp_path / "new.npz")  # the precomputed proposer reads a cache entry as is
    assert np.array_equal(read.masks, masks) and np.array_equal(read.scores, scores)
    # an entry of the first cache format (one packed row per mask) still loads
    with open(tmp_path / "old.npz", "wb") as f:
        np.savez_compressed(
            f, packed=np.packbits(masks.reshape(3, -1), axis=1), shape=np.array([3, 7, 9]), scores=scores
        )
    old = load_proposals(tmp_path / "old.npz")
    assert np.array_equal(old.masks, masks) and np.array_equal(old.scores, scores)


def test_an_unreadable_entry_is_refused_with_the_fix(tmp_path):
    from moduseg_core import ModusegError

    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ModusegError, match="moduseg cache prune --all"):
        load_proposals(tmp_path / "bad.npz")
    with open(tmp_path / "short.npz", "wb") as f:
        np.savez(f, packed=np.zeros(2, np.uint8), shape=np.array([3, 7, 9]), scores=np.ones(3, np.float32))
    with pytest.raises(ModusegError, match="short.npz"):
        load_proposals(tmp_path / "short.npz")
    with pytest.raises(ModusegError, match="features entry"):
        load_features(tmp_path / "bad.npz")


def test_cached_real_proposer_computes_once_per_image_and_configuration(coco_mini, cache):
    ids = (coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:2]
    images = [read_image(coco_mini / "JPEGImages" / f"{i}.jpg") for i in ids]
    choice = Choice(name="slic", options={"n_segments": [20, 40]})
    built = []
    proposer = CachedProposer(cache, choice, lambda: built.append(1) or build("proposer", choice).component)
    first = [proposer.propose(img, image_id=i) for img, i in zip(images, ids, strict=True)]
    assert proposer.computed == 2 and len(built) == 1
    # a new wrapper (another process) with the same configuration: served from disk, nothing built
    again = CachedProposer(cache, choice, lambda: built.append(1) or build("proposer", choice).component)
    second = [again.propose(img, image_id=i) for img, i in zip(images, ids, strict=True)]
    assert again.computed == 0 and len(built) == 1
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)
        assert len(a) > 20
    # another option value is another key
    other = CachedProposer(
        cache,
        Choice(name="slic", options={"n_segments": [30]}),
        lambda: build("proposer", Choice(name="slic", options={"n_segments": [30]})).component,
    )
    other.propose(images[0], image_id=ids[0])
    assert other.computed == 1
    # runtime-independent identity: the plugin and its version are part of the key
    assert "plugin" in proposer.identity and proposer.identity["options"]["n_segments"] == [20, 40]


def test_a_cached_batch_sends_only_the_misses_to_the_proposer_together(coco_mini, cache):
    """CachedProposer.propose_batch: hits come from disk, the misses go to the proposer's propose_batch in
    one call, and every image gets what propose gives."""
    ids = (coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:3]
    images = [read_image(coco_mini / "JPEGImages" / f"{i}.jpg") for i in ids]
    choice = Choice(name="slic", options={"n_segments": [20]})
    real = build("proposer", choice).component
    calls = []

    class Batching:  # the real slic proposer, with a propose_batch that records its calls
        def propose(self, image, *, image_id=None):
            return real.propose(image, image_id=image_id)

        def propose_batch(self, batch, batch_ids):
            calls.append(list(batch_ids))
            return [real.propose(image, image_id=i) for image, i in zip(batch, batch_ids, strict=True)]

    proposer = CachedProposer(cache, choice, Batching)
    proposer.propose(images[1], image_id=ids[1])  # one hit later
    found = proposer.propose_batch(images, ids)
    assert calls == [[ids[0], ids[2]]] and proposer.computed == 3
    for image, i, got in zip(images, ids, found, strict=True):
        want = real.propose(image, image_id=i)
        assert np.array_equal(got.masks, want.masks) and np.array_equal(got.scores, want.scores)


def _fill(cache: StageCache) -> dict[str, str]:
    keys = {}
    for stage, payload in (("scores", "a"), ("scores", "b"), ("predictions", "c")):
        key = cache.key(stage, {"x": payload})
        with cache.put(stage, key) as tmp:
            tmp.write_bytes(b"0123456789")
        keys[payload] = key
    bank_key = cache.key("banks", {"x": "bank"})
    with cache.put("banks", bank_key) as tmp:
        tmp.mkdir()
        (tmp / "vectors.npy").write_bytes(b"v" * 100)
    keys["bank"] = bank_key
    return keys


def test_cache_cli_list_size_prune(tmp_path, capsys):
    root = tmp_path / "stages"
    cache = StageCache(root)
    keys = _fill(cache)
    old = time.time() - 10 * 86400
    os.utime(cache.path("scores", keys["a"]), (old, old))
    os.utime(cache.path("banks", keys["bank"]), (old, old))

    assert main(["cache", "list", "--cache-dir", str(root), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["stages"]["scores"]["entries"] == 2 and listing["stages"]["banks"]["bytes"] == 100
    assert main(["cache", "list", "--cache-dir", str(root), "--stage", "scores"]) == 0
    assert "2 entries" in capsys.readouterr().out
    assert main(["cache", "size", "--cache-dir", str(root)]) == 0
    assert "(130 bytes)" in capsys.readouterr().out

    assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "5"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert not cache.path("scores", keys["a"]).exists() and not cache.path("banks", keys["bank"]).exists()
    assert cache.path("scores", keys["b"]).exists() and cache.path("predictions", keys["c"]).exists()

    assert main(["cache", "prune", "--cache-dir", str(root), "--all", "--stage", "predictions"]) == 0
    assert not cache.path("predictions", keys["c"]).exists() and cache.path("scores", keys["b"]).exists()
    assert main(["cache", "prune", "--cache-dir", str(root), "--all"]) == 0
    assert cache.summary() == {}


def test_a_hit_refreshes_the_entry_age(cache):
    keys = _fill(cache)
    path = cache.path("scores", keys["a"])
    old = time.time() - 10 * 86400
    os.utime(path, (old, old))
    assert cache.get("scores", keys["a"]) == path
    cache.prune(older_than_days=5)
    assert path.exists()  # used just now: kept


@pytest.mark.parametrize(
    "argv, message",
    [
        (["cache", "prune"], "needs --older-than DAYS or --all"),
        (["cache", "prune", "--all", "--older-than", "3"], "not both"),
        (["cache", "prune", "--older-than", "-1"], "is negative"),
        (["cache", "list", "--stage", "bank"], "unknown cache stage 'bank'; did you mean 'banks'?"),
    ],
)
def test_cache_cli_errors_are_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
