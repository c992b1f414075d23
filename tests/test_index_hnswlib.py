"""The ``hnswlib`` bank index: recall against ``exact``, the SearchResult contract, persistence, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import moduseg_core.contract.plugins as plugins
from moduseg_core import ModusegError, get_component

pytest.importorskip("hnswlib")


@pytest.fixture(autouse=True)
def _only_index_plugins(only_plugins):
    only_plugins("indexes")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bank_and_queries(rng: np.random.Generator, n: int, q: int, dim: int, classes: int):
    """L2-normalised vectors around one centre per class (like pooled mask features); bank and queries share centres."""
    centres = unit(rng.standard_normal((classes, dim)))
    labels = rng.integers(0, classes, n + q)
    vectors = unit(centres[labels] + 0.6 * rng.standard_normal((n + q, dim)).astype(np.float32) / np.sqrt(dim))
    return vectors[:n], vectors[n:]


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), exact.tolist(), strict=True)]))


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def realistic():
    """20k×384 bank (labels = bank rows, so results name rows) and 400 queries, plus the exact top-25."""
    rng = np.random.default_rng(21)
    bank, queries = bank_and_queries(rng, 20000, 400, 384, 21)
    exact = get_component("index", "exact")
    exact.add(bank, np.arange(len(bank)))
    return bank, queries, exact.search(queries, 25)


@pytest.mark.slow
def test_recall_at_25_vs_exact_at_the_default_ef(realistic, tmp_path):
    bank, queries, ref = realistic
    index = get_component("index", "hnswlib", build_threads=0)  # all cores to build; search at the default ef
    assert index.ef >= 100
    index.add(bank, np.arange(len(bank)))
    result = index.search(queries, 25)
    assert result.similarities.dtype == np.float32 and result.labels.dtype == np.int32
    assert result.similarities.shape == result.labels.shape == (400, 25)
    assert np.all(np.diff(result.similarities, axis=1) <= 0), "similarities must be sorted descending"
    assert recall_at(result.labels, ref.labels) >= 0.99
    # the similarities are the inner products of the rows returned
    np.testing.assert_allclose(
        result.similarities, np.einsum("qc,qkc->qk", queries, bank[result.labels]), atol=2e-6, rtol=0
    )
    assert index.exact_fallbacks == 0
    # a smaller search breadth finds fewer true neighbours: ef is honoured (same graph, loaded from disk)
    index.save(tmp_path / "h")
    narrow = get_component("index", "hnswlib", ef=1)
    narrow.load(tmp_path / "h")
    assert recall_at(narrow.search(queries, 25).labels, ref.labels) < recall_at(result.labels, ref.labels)


def test_equal_similarities_come_back_lower_row_first():
    rng = np.random.default_rng(22)
    bank = unit(rng.standard_normal((300, 16)))
    bank[[40, 7, 250, 120]] = bank[3]  # five identical vectors: rows 3, 7, 40, 120, 250
    index = get_component("index", "hnswlib")
    index.add(bank, np.arange(300))
    sims, rows = index.search(bank[[3]], 5)
    assert rows.tolist() == [[3, 7, 40, 120, 250]]
    assert np.all(sims == sims[0, 0])


def test_k_up_to_the_bank_size_and_exact_fallback():
    rng = np.random.default_rng(23)
    bank = unit(rng.standard_normal((60, 8)))
    index = get_component("index", "hnswlib")
    index.add(bank, np.arange(60))
    sims, rows = index.search(bank[:4], 60)
    assert all(sorted(r) == list(range(60)) for r in rows.tolist())
    expected = np.sort(bank[:4] @ bank.T, axis=1)[:, ::-1]
    np.testing.assert_allclose(sims, expected, atol=2e-6)


def test_build_is_reproducible_and_add_twice_equals_add_once():
    rng = np.random.default_rng(24)
    bank, queries = bank_and_queries(rng, 3000, 50, 64, 9)
    once = get_component("index", "hnswlib", M=8, ef=16)
    once.add(bank, np.arange(3000))
    again = get_component("index", "hnswlib", M=8, ef=16)
    again.add(bank[:1000], np.arange(1000))
    again.add(bank[1000:1000], np.arange(0))  # empty adds are fine
    again.add(bank[1000:], np.arange(1000, 3000))  # grows the graph
    assert len(again) == len(once) == 3000 and again.dim == 64
    a, b = once.search(queries, 25), again.search(queries, 25)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.similarities, b.similarities)


def test_cosine_space_normalises():
    rng = np.random.default_rng(25)
    bank = rng.standard_normal((500, 12)).astype(np.float32) * rng.uniform(0.5, 3.0, (500, 1)).astype(np.float32)
    queries = rng.standard_normal((20, 12)).astype(np.float32) * 4
    index = get_component("index", "hnswlib", space="cosine")
    index.add(bank, np.arange(500))
    sims, rows = index.search(queries, 10)
    cosine = unit(queries) @ unit(bank).T
    np.testing.assert_allclose(sims, np.take_along_axis(cosine, rows.astype(np.int64), axis=1), atol=2e-6)
    assert recall_at(rows, np.argsort(-cosine, axis=1)[:, :10]) >= 0.99
    assert np.all(sims <= 1.0 + 1e-6)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(26)
    bank, queries = bank_and_queries(rng, 2000, 30, 32, 5)
    labels = rng.integers(0, 5, 2000)
    index = get_component("index", "hnswlib", M=12, ef_construction=64)
    index.add(bank, labels)
    target = tmp_path / "bank" / "index"
    index.save(target)
    assert {p.name for p in target.iterdir()} == {"index.hnsw", "labels.npy", "index.json"}
    manifest = json.loads((target / "index.json").read_text())
    assert manifest == {
        "index": "hnswlib", "count": 2000, "dim": 32, "metric": "inner_product", "format": 1,
        "space": "ip", "M": 12, "ef_construction": 64,
    }
    loaded = get_component("index", "hnswlib")  # build settings come from the saved graph
    loaded.load(target)
    assert (len(loaded), loaded.dim, loaded.M, loaded.ef_construction) == (2000, 32, 12, 64)
    before, after = index.search(queries, 25), loaded.search(queries, 25)
    np.testing.assert_array_equal(before.labels, after.labels)
    np.testing.assert_array_equal(before.similarities, after.similarities)
    # a loaded index takes more vectors; saving again replaces the directory in one step
    loaded.add(bank[:10], labels[:10])
    loaded.save(target)
    assert json.loads((target / "index.json").read_text())["count"] == 2010
    assert [p.name for p in target.parent.iterdir()] == ["index"]
    # empty indexes round-trip
    get_component("index", "hnswlib").save(tmp_path / "empty")
    empty = get_component("index", "hnswlib")
    empty.load(tmp_path / "empty")
    assert len(empty) == 0 and empty.dim is None


def test_load_errors(tmp_path):
    index = get_component("index", "hnswlib")
    with pytest.raises(ModusegError, match=r"is not a hnswlib index directory \(no index\.json\)"):
        index.load(tmp_path)
    exact = get_component("index", "exact")
    exact.add(np.eye(3, dtype=np.float32), [0, 1, 2])
    exact.save(tmp_path / "exact")
    with pytest.raises(ModusegError, match="holds a 'exact' index, not 'hnswlib'"):
        index.load(tmp_path / "exact")
    good = get_component("index", "hnswlib")
    good.add(unit(np.random.default_rng(0).standard_normal((50, 8))), np.arange(50))
    good.save(tmp_path / "h")
    (tmp_path / "h" / "index.hnsw").write_bytes(b"not an hnsw graph")
    with pytest.raises(ModusegError, match="index.hnsw is corrupt") as e:
        get_component("index", "hnswlib").load(tmp_path / "h")
    one_line(e)
    (tmp_path / "h" / "index.hnsw").unlink()
    with pytest.raises(ModusegError, match="index.hnsw is missing"):
        get_component("index", "hnswlib").load(tmp_path / "h")


def test_input_errors_are_one_line():
    index = get_component("index", "hnswlib")
    with pytest.raises(ModusegError, match="is empty"):
        index.search(np.eye(4, dtype=np.float32), 1)
    index.add(np.eye(4, dtype=np.float32), [0, 1, 2, 3])
    with pytest.raises(ModusegError, match=r"k=5 is out of range; k must be between 1 and the index size 4") as e:
        index.search(np.eye(4, dtype=np.float32), 5)
    one_line(e)
    with pytest.raises(ModusegError, match="queries have 3 dims but the index holds 4-dim vectors"):
        index.search(np.ones((2, 3), np.float32), 1)
    with pytest.raises(ModusegError, match=r"label -1 in row 1 is negative"):
        index.add(np.ones((2, 4), np.float32), [0, -1])
    with pytest.raises(ModusegError, match=r"non-finite values"):
        index.add(np.array([[np.nan, 0, 0, 0]], np.float32), [0])
    assert len(index) == 4
    sims, labels = index.search(np.zeros((0, 4), np.float32), 2)
    assert sims.shape == labels.shape == (0, 2)
    with pytest.raises(ModusegError, match=r"space='l2' is invalid"):
        get_component("index", "hnswlib", space="l2")
    with pytest.raises(ModusegError, match=r"M=1 is invalid"):
        get_component("index", "hnswlib", M=1)
    # threads decide how fast, not what: they stay out of fingerprints
    identity = plugins.build_options("index", "hnswlib", {"threads": 3, "build_threads": 0}).identity()
    assert identity == {"space": "ip", "ef": 128, "M": 32, "ef_construction": 200, "seed": 100}


def test_registration_is_light_and_declares_hnswlib():
    import moduseg_core

    spec = {s.name: s for s in moduseg_core.list_components("index")}["hnswlib"]
    assert spec.extra == "hnswlib" and spec.requires == ("hnswlib",)
    code = (
        "import sys, moduseg_builtins.indexes, moduseg_builtins.indexes._hnsw; "
        "heavy = [m for m in ('hnswlib', 'faiss', 'torch') if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
