"""The ``exact`` and ``faiss`` bank indexes: correctness, ties, persistence, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import moduseg_core
import moduseg_core.contract.plugins as plugins
from moduseg_core import ModusegError, get_component

INDEXES = ["exact", "faiss"]


@pytest.fixture(autouse=True)
def _only_index_plugins(only_plugins):
    # Load just the plugins these tests need, so half-written sibling plugins cannot break them.
    only_plugins("purifiers,aggregators,indexes")


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_bank(rng: np.random.Generator, n: int, dim: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectors around one centre per class, L2-normalised, like pooled mask features."""
    centres = unit(rng, classes, dim)
    labels = rng.integers(0, classes, n)
    vectors = centres[labels] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), labels


def brute_force(bank: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int):
    scores = queries.astype(np.float64) @ bank.astype(np.float64).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), labels[rows]


def assert_same_neighbours(result, ref_sims, ref_labels, atol):
    """Similarities close; labels identical except where the reference has a near-tie (rounding may swap those)."""
    sims, labels = result
    assert sims.dtype == np.float32 and labels.dtype == np.int32
    assert sims.shape == ref_sims.shape == labels.shape
    np.testing.assert_allclose(sims, ref_sims, atol=atol, rtol=0)
    assert np.all(np.diff(sims, axis=1) <= 0), "similarities must be sorted descending"
    rows, cols = np.nonzero(labels != ref_labels)
    for r, c in zip(rows, cols, strict=True):
        gaps = np.abs(ref_sims[r] - ref_sims[r, c])
        gaps[c] = np.inf
        assert gaps.min() <= 2 * atol, f"query {r} neighbour {c}: label {labels[r, c]} != {ref_labels[r, c]}"
    assert len(rows) <= 0.001 * labels.size + 2


# -- correctness ----------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 7, 25])
def test_exact_matches_brute_force(k):
    rng = np.random.default_rng(1)
    bank, labels = unit(rng, 700, 64), rng.integers(0, 21, 700)
    queries = unit(rng, 53, 64)
    index = get_component("index", "exact", chunk=10)  # several blocks, the last one short
    index.add(bank, labels)
    assert len(index) == 700 and index.dim == 64
    assert_same_neighbours(index.search(queries, k), *brute_force(bank, labels, queries, k), atol=1e-6)


def test_exact_k_equals_size_returns_everything():
    rng = np.random.default_rng(2)
    bank, labels = unit(rng, 40, 16), np.arange(40)
    index = get_component("index", "exact")
    index.add(bank, labels)
    sims, found = index.search(unit(rng, 3, 16), 40)
    assert sims.shape == (3, 40)
    assert all(sorted(row) == list(range(40)) for row in found.tolist())


def test_faiss_equals_exact_on_real_sized_data():
    rng = np.random.default_rng(3)
    bank, labels = clustered_bank(rng, 5000, 384, 21)
    queries, _ = clustered_bank(rng, 200, 384, 21)
    exact = get_component("index", "exact")
    flat = get_component("index", "faiss", gpu="never")
    exact.add(bank, labels)
    flat.add(bank, labels)
    for k in (1, 25, 5000):
        ref_sims, ref_labels = exact.search(queries, k)
        assert_same_neighbours(flat.search(queries, k), ref_sims, ref_labels, atol=1e-5)
    assert_same_neighbours(exact.search(queries, 25), *brute_force(bank, labels, queries, 25), atol=1e-5)


def test_exact_torch_backend_matches_numpy():
    """The GPU code path, run by torch on the CPU: same neighbours, same tie rule."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    bank, labels = clustered_bank(rng, 3000, 96, 10)
    bank[100:140] = bank[5]  # tie groups that straddle the k-th place
    queries = np.concatenate([unit(rng, 30, 96), bank[[5, 5, 7]]])
    numpy_index = get_component("index", "exact")
    torch_index = get_component("index", "exact", chunk=8)
    torch_index._backend = "cpu"  # a torch device: exercises _search_torch without a GPU
    for index in (numpy_index, torch_index):
        index.add(bank, labels)
    ref_sims, ref_labels = numpy_index.search(queries, 25)
    assert_same_neighbours(torch_index.search(queries, 25), ref_sims, ref_labels, atol=1e-6)
    np.testing.assert_array_equal(torch_index.search(queries[-3:], 25).labels, ref_labels[-3:])


def _exact_torch_cpu():
    pytest.importorskip("torch")
    index = get_component("index", "exact")
    index._backend = "cpu"
    return index


TIE_BUILDERS = {
    "exact": lambda: get_component("index", "exact"),
    "exact-torch": _exact_torch_cpu,
    "faiss": lambda: get_component("index", "faiss", gpu="never"),
}


@pytest.mark.parametrize("backend", sorted(TIE_BUILDERS))
def test_ties_go_to_the_lower_bank_row(backend):
    # Exactly representable values, so every backend computes bit-identical similarities.
    first = [0.5, 1, 0.5, 1, 0.25, 1, 0.5, 0, 1, 0.5, 0.5, 0.25] + [0.75] * 60
    bank = np.zeros((len(first), 8), np.float32)
    bank[:, 0] = first
    bank[:, 1] = 0.5
    labels = 100 + np.arange(len(first))
    index = TIE_BUILDERS[backend]()
    index.add(bank[:30], labels[:30])
    index.add(bank[30:], labels[30:])
    e0, e1 = np.eye(8, dtype=np.float32)[:2]
    for n_queries in (1, 40):  # faiss takes different code paths below and above 20 queries
        queries = np.stack([e0, -e0, e1, e0 + e1] * 10)[:n_queries]
        for k in (1, 2, 6, 9, 30, 65, len(first)):
            sims, found = index.search(queries, k)
            scores = queries @ bank.T
            expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            np.testing.assert_array_equal(found, labels[expected], err_msg=f"k={k} queries={n_queries}")
            np.testing.assert_array_equal(sims, np.take_along_axis(scores, expected, axis=1))


@pytest.mark.parametrize("name", INDEXES)
def test_add_twice_equals_add_once(name):
    rng = np.random.default_rng(5)
    bank, labels = clustered_bank(rng, 1200, 48, 7)
    queries = unit(rng, 30, 48)
    once = get_component("index", name)
    once.add(bank, labels)
    twice = get_component("index", name)
    twice.add(bank[:500], labels[:500])
    twice.add(bank[500:500], labels[500:500])  # empty adds are fine
    twice.add(bank[500:], labels[500:])
    assert len(twice) == len(once) == 1200
    a, b = once.search(queries, 25), twice.search(queries, 25)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.similarities, b.similarities)


@pytest.mark.parametrize("name", INDEXES)
def test_empty_query_batch(name):
    index = get_component("index", name)
    index.add(np.eye(4, dtype=np.float32), [0, 1, 2, 3])
    sims, labels = index.search(np.zeros((0, 4), np.float32), 3)
    assert sims.shape == labels.shape == (0, 3)
    assert sims.dtype == np.float32 and labels.dtype == np.int32


@pytest.mark.parametrize("name", INDEXES)
def test_add_does_not_alias_the_callers_array(name):
    bank = np.eye(4, dtype=np.float32)
    index = get_component("index", name)
    index.add(bank, [0, 1, 2, 3])
    bank[:] = 0
    assert index.search(np.eye(4, dtype=np.float32)[:1], 1).labels.tolist() == [[0]]


# -- persistence ----------------------------------------------------------------------


@pytest.mark.parametrize("name", INDEXES)
def test_save_load_round_trip(name, tmp_path):
    rng = np.random.default_rng(6)
    bank, labels = clustered_bank(rng, 900, 32, 5)
    queries = unit(rng, 25, 32)
    index = get_component("index", name)
    index.add(bank, labels)
    target = tmp_path / "bank" / "index"
    index.save(target)
    files = {"exact": {"vectors.npy", "labels.npy"}, "faiss": {"index.faiss", "labels.npy"}}[name]
    assert {p.name for p in target.iterdir()} == files | {"index.json"}
    manifest = json.loads((target / "index.json").read_text())
    assert manifest == {"index": name, "count": 900, "dim": 32, "metric": "inner_product", "format": 1}

    loaded = get_component("index", name)
    loaded.load(target)
    assert len(loaded) == 900 and loaded.dim == 32
    before, after = index.search(queries, 25), loaded.search(queries, 25)
    np.testing.assert_array_equal(before.labels, after.labels)
    np.testing.assert_array_equal(before.similarities, after.similarities)

    # saving again replaces the directory in one step and leaves no temporary siblings
    loaded.add(bank[:10], labels[:10])
    loaded.save(target)
    assert json.loads((target / "index.json").read_text())["count"] == 910
    assert [p.name for p in target.parent.iterdir()] == ["index"]
    # load replaces what an index held
    index.load(target)
    assert len(index) == 910


@pytest.mark.parametrize("name", INDEXES)
def test_empty_index_round_trip(name, tmp_path):
    index = get_component("index", name)
    index.save(tmp_path / "idx")
    loaded = get_component("index", name)
    loaded.load(tmp_path / "idx")
    assert len(loaded) == 0 and loaded.dim is None


@pytest.mark.parametrize("name", INDEXES)
def test_load_of_a_wrong_directory_raises(name, tmp_path):
    index = get_component("index", name)
    with pytest.raises(ModusegError, match=rf"is not a {name} index directory \(no index\.json\)"):
        index.load(tmp_path)
    with pytest.raises(ModusegError, match="no index.json"):
        index.load(tmp_path / "missing")
    other = "faiss" if name == "exact" else "exact"
    source = get_component("index", other)
    source.add(np.eye(3, dtype=np.float32), [0, 1, 2])
    source.save(tmp_path / "other")
    with pytest.raises(ModusegError, match=f"holds a '{other}' index, not '{name}'"):
        index.load(tmp_path / "other")


@pytest.mark.parametrize("name", INDEXES)
def test_load_of_a_damaged_directory_raises(name, tmp_path):
    index = get_component("index", name)
    index.add(np.eye(3, dtype=np.float32), [0, 1, 2])
    index.save(tmp_path / "idx")
    (tmp_path / "idx" / "labels.npy").write_bytes(b"not numpy")
    with pytest.raises(ModusegError, match="corrupt"):
        get_component("index", name).load(tmp_path / "idx")
    (tmp_path / "idx" / "index.json").write_text("{broken")
    with pytest.raises(ModusegError, match="corrupt"):
        get_component("index", name).load(tmp_path / "idx")


def test_save_refuses_to_replace_a_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    index = get_component("index", "exact")
    index.add(np.eye(3, dtype=np.float32), [0, 1, 2])
    with pytest.raises(ModusegError, match="not an index directory"):
        index.save(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


# -- errors ---------------------------------------------------------------------------


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", INDEXES)
def test_k_out_of_range_raises(name):
    index = get_component("index", name)
    queries = np.eye(4, dtype=np.float32)[:2]
    with pytest.raises(ModusegError, match="is empty"):
        index.search(queries, 1)
    index.add(np.eye(4, dtype=np.float32), [0, 1, 2, 3])
    for k in (0, 5, -1):
        expected = rf"k={k} is out of range; k must be between 1 and the index size 4"
        with pytest.raises(ModusegError, match=expected) as e:
            index.search(queries, k)
        one_line_error(e)
    with pytest.raises(ModusegError, match="not an integer"):
        index.search(queries, 2.0)


@pytest.mark.parametrize("name", INDEXES)
def test_dim_mismatch_raises(name):
    index = get_component("index", name)
    index.add(np.eye(4, dtype=np.float32), [0, 1, 2, 3])
    with pytest.raises(ModusegError, match="vectors have 5 dims but the index holds 4-dim vectors") as e:
        index.add(np.ones((2, 5), np.float32), [0, 1])
    one_line_error(e)
    with pytest.raises(ModusegError, match="queries have 3 dims but the index holds 4-dim vectors"):
        index.search(np.ones((2, 3), np.float32), 1)
    assert len(index) == 4


@pytest.mark.parametrize("name", INDEXES)
@pytest.mark.parametrize(
    "vectors, labels, message",
    [
        (np.ones((2, 3)), [0, -1], r"label -1 in row 1 is negative"),
        (np.ones((2, 3)), [0.0, 1.0], r"labels have dtype float64; labels must be integer"),
        (np.ones((2, 3)), [0, 1, 2], r"labels have shape \(3,\) but there are 2 vectors"),
        (np.array([[1.0, np.nan, 0.0], [1, 1, 1]]), [0, 1], r"1 non-finite values \(NaN/inf\), first in row 0"),
        (np.ones(3), [0], r"must be a 2-D N×C array; pass one vector as vector\[None\]"),
        (np.array([["a", "b"]]), [0], r"have dtype <U1; they must be floating point"),
    ],
)
def test_bad_adds_raise(name, vectors, labels, message):
    index = get_component("index", name)
    with pytest.raises(ModusegError, match=message) as e:
        index.add(vectors, labels)
    one_line_error(e)
    assert len(index) == 0


@pytest.mark.parametrize("name", INDEXES)
def test_non_finite_queries_raise(name):
    index = get_component("index", name)
    index.add(np.eye(3, dtype=np.float32), [0, 1, 2])
    with pytest.raises(ModusegError, match="queries contain 1 non-finite"):
        index.search(np.array([[np.inf, 0, 0]], np.float32), 1)


def test_options_are_checked():
    with pytest.raises(ModusegError, match=r"device='gpu' is invalid.*auto, cpu, mps, cuda or cuda:N") as e:
        get_component("index", "exact", device="gpu")
    one_line_error(e)
    # the one device type every component shares names mps; numpy-or-CUDA components refuse it when built
    with pytest.raises(ModusegError, match=r"index 'exact' option device='mps' is not supported") as e:
        get_component("index", "exact", device="mps").backend  # noqa: B018 (building the backend is what raises)
    one_line_error(e)
    with pytest.raises(ModusegError, match="chunk=0 is invalid"):
        get_component("index", "exact", chunk=0)
    with pytest.raises(ModusegError, match="gpu='sometimes' is invalid"):
        get_component("index", "faiss", gpu="sometimes")
    # device and chunk decide where and how, not what: they stay out of fingerprints
    options = plugins.build_options("index", "exact", {"device": "auto", "chunk": 8})
    assert options.identity() == {}
    # gpu decides where, not what; type/nlist/nprobe decide what an approximate search returns
    assert plugins.build_options("index", "faiss", {"gpu": "never"}).identity() == {
        "type": "flat",
        "nlist": None,
        "nprobe": 32,
    }


def test_gpu_requests_without_a_gpu():
    faiss = pytest.importorskip("faiss")
    if faiss.get_num_gpus() == 0:
        with pytest.raises(ModusegError, match=r"gpu='always' but faiss sees no GPU"):
            get_component("index", "faiss", gpu="always")
        assert get_component("index", "faiss").use_gpu is False
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        index = get_component("index", "exact", device="cuda")
        index.add(np.eye(3, dtype=np.float32), [0, 1, 2])
        with pytest.raises(ModusegError, match=r"device='cuda' but torch sees no CUDA GPU"):
            index.search(np.eye(3, dtype=np.float32), 1)
        auto = get_component("index", "exact", device="auto")
        assert auto.backend == "numpy"


def test_registration_is_light_and_declares_faiss():
    specs = {spec.name: spec for spec in moduseg_core.list_components("index")}
    assert {"exact", "faiss"} <= set(specs)
    assert specs["faiss"].extra == "faiss" and specs["faiss"].requires == ("faiss",)
    assert specs["exact"].requires == ()
    code = (
        "import sys, moduseg_builtins.indexes, moduseg_builtins.indexes._exact; "
        "heavy = [m for m in ('faiss', 'torch') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


# -- faiss IVF (type='ivf') ------------------------------------------------------------


def recall_at(found_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k rows that the approximate search also returned."""
    return float(
        np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found_rows.tolist(), exact_rows.tolist(), strict=True)])
    )


def bank_and_queries(rng: np.random.Generator, n: int, q: int, dim: int, classes: int):
    """Bank and queries drawn around the same class centres (as bank and inference masks of one dataset)."""
    vectors, _ = clustered_bank(rng, n + q, dim, classes)
    return vectors[:n], vectors[n:]


def test_faiss_ivf_recall_vs_exact(tmp_path):
    """A realistic bank (20k×384, 21 class clusters like pooled mask features); labels are the bank rows."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(11)
    bank, queries = bank_and_queries(rng, 20000, 400, 384, 21)
    rows = np.arange(len(bank))
    exact = get_component("index", "exact")
    exact.add(bank, rows)
    ivf = get_component("index", "faiss", type="ivf", gpu="never")
    ivf.add(bank, rows)
    ref = exact.search(queries, 25)
    result = ivf.search(queries, 25)
    assert ivf.nlist == 512  # 4·sqrt(20000) = 566 capped at 20000 // 39
    assert result.similarities.dtype == np.float32 and result.labels.dtype == np.int32
    assert np.all(np.diff(result.similarities, axis=1) <= 0)
    assert recall_at(result.labels, ref.labels) >= 0.99
    # what it finds is scored exactly: the similarity of each returned row is its inner product
    np.testing.assert_allclose(
        result.similarities, np.einsum("qc,qkc->qk", queries, bank[result.labels]), atol=1e-5, rtol=0
    )
    # fewer cells searched = lower recall: nprobe is honoured (the same trained cells, loaded from disk)
    ivf.save(tmp_path / "ivf")
    narrow = get_component("index", "faiss", type="ivf", nprobe=1, gpu="never")
    narrow.load(tmp_path / "ivf")
    assert recall_at(narrow.search(queries, 25).labels, ref.labels) < 0.9


def test_faiss_ivf_trains_on_everything_added_before_the_first_search():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(12)
    bank, labels = clustered_bank(rng, 3000, 48, 7)
    queries = unit(rng, 40, 48)
    once = get_component("index", "faiss", type="ivf", nlist=16, gpu="never")
    once.add(bank, labels)
    twice = get_component("index", "faiss", type="ivf", nlist=16, gpu="never")
    twice.add(bank[:1000], labels[:1000])
    twice.add(bank[1000:1000], labels[1000:1000])
    twice.add(bank[1000:], labels[1000:])
    a, b = once.search(queries, 25), twice.search(queries, 25)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.similarities, b.similarities)
    # adds after training go into the trained cells and are found
    extra = unit(rng, 5, 48)
    twice.add(extra, np.full(5, 99))
    assert len(twice) == 3005 and twice.nlist == 16
    assert twice.search(extra, 1).labels.ravel().tolist() == [99] * 5


def test_faiss_ivf_small_cells_still_return_k_neighbours():
    """nprobe=1 over tiny cells holds fewer than k vectors: those queries are searched over every cell."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(13)
    bank, labels = clustered_bank(rng, 400, 16, 5)
    queries = unit(rng, 30, 16)
    ivf = get_component("index", "faiss", type="ivf", nlist=40, nprobe=1, gpu="never")
    ivf.add(bank, labels)
    for k in (25, 399, 400):
        sims, found = ivf.search(queries, k)
        assert found.shape == (30, k) and found.min() >= 0
        assert np.all(np.diff(sims, axis=1) <= 0)
    ref = get_component("index", "exact")
    ref.add(bank, labels)
    np.testing.assert_allclose(ivf.search(queries, 400).similarities, ref.search(queries, 400).similarities, atol=1e-5)


def test_faiss_ivf_save_load_round_trip(tmp_path):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(14)
    bank, labels = clustered_bank(rng, 2000, 32, 5)
    queries = unit(rng, 25, 32)
    index = get_component("index", "faiss", type="ivf", nlist=20, nprobe=4, gpu="never")
    index.add(bank, labels)
    target = tmp_path / "ivf"
    index.save(target)  # trains first: nothing was searched yet
    assert {p.name for p in target.iterdir()} == {"index.faiss", "labels.npy", "index.json"}
    manifest = json.loads((target / "index.json").read_text())
    assert manifest == {
        "index": "faiss", "count": 2000, "dim": 32, "metric": "inner_product", "format": 1, "type": "ivf", "nlist": 20,
    }
    # the cells come from the file; nprobe is a search setting and comes from the options
    loaded = get_component("index", "faiss", type="ivf", nlist=7, nprobe=4, gpu="never")
    loaded.load(target)
    assert (len(loaded), loaded.dim, loaded.nlist) == (2000, 32, 20)
    before, after = index.search(queries, 25), loaded.search(queries, 25)
    np.testing.assert_array_equal(before.labels, after.labels)
    np.testing.assert_array_equal(before.similarities, after.similarities)
    wide = get_component("index", "faiss", type="ivf", nprobe=20, gpu="never")
    wide.load(target)
    exact = get_component("index", "exact")
    exact.add(bank, labels)
    assert_same_neighbours(wide.search(queries, 25), *exact.search(queries, 25), atol=1e-5)

    # a kind mismatch is refused in one line, both ways
    with pytest.raises(ModusegError, match=r"holds a faiss type='ivf' index but this index has type='flat'") as e:
        get_component("index", "faiss", gpu="never").load(target)
    one_line_error(e)
    flat = get_component("index", "faiss", gpu="never")
    flat.add(bank, labels)
    flat.save(tmp_path / "flat")
    with pytest.raises(ModusegError, match=r"holds a faiss type='flat' index.*set index.type=flat"):
        get_component("index", "faiss", type="ivf", gpu="never").load(tmp_path / "flat")

    # empty IVF indexes round-trip too
    empty = get_component("index", "faiss", type="ivf", gpu="never")
    empty.save(tmp_path / "empty")
    again = get_component("index", "faiss", type="ivf", gpu="never")
    again.load(tmp_path / "empty")
    assert len(again) == 0 and again.dim is None


def test_faiss_ivf_needs_enough_vectors_to_train():
    pytest.importorskip("faiss")
    index = get_component("index", "faiss", type="ivf", nlist=64, gpu="never")
    index.add(np.eye(8, dtype=np.float32), np.arange(8))
    with pytest.raises(ModusegError, match=r"nlist=64 needs at least 64 vectors to train, but 8 were added") as e:
        index.search(np.eye(8, dtype=np.float32), 1)
    one_line_error(e)
    automatic = get_component("index", "faiss", type="ivf", gpu="never")
    automatic.add(np.eye(8, dtype=np.float32), np.arange(8))
    assert automatic.search(np.eye(8, dtype=np.float32), 1).labels.ravel().tolist() == list(range(8))
    assert automatic.nlist == 1
    with pytest.raises(ModusegError, match="type='hnsw' is invalid"):
        get_component("index", "faiss", type="hnsw")
    with pytest.raises(ModusegError, match="nprobe=0 is invalid"):
        get_component("index", "faiss", type="ivf", nprobe=0)


@pytest.mark.parametrize("k", [1, 7, 25])
def test_exact_large_bank_screen_is_exact_with_ties(k):
    """Banks of ≥ 2k blocks go through the block-maximum screen; the result must equal a
    full stable sort, ties straddling the k-th place included."""
    rng = np.random.default_rng(k)
    bank = np.round(unit(rng, 6000, 16), 1)  # coarse values: many exact ties
    bank[100:400] = bank[50]  # a tie group of 301 identical rows
    queries = np.concatenate([np.round(unit(rng, 20, 16), 1), bank[50:51]])
    labels = np.arange(len(bank)) % 21
    index = get_component("index", "exact")
    index.add(bank, labels)
    sims, found = index.search(queries, k)
    scores = queries @ bank.T
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(found, labels[expected])
    np.testing.assert_array_equal(sims, np.take_along_axis(scores, expected, axis=1))
