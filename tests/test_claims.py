"""Claims of cache entries (``moduseg_core.cache.claims``): one worker computes an entry at a time,
stale claims (dead owner, no refresh) are taken over, a fresh one never is."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from moduseg_core.cache import StageCache
from moduseg_core.cache.claims import claim_path, claimed, fill, is_stale, read_owner, take_over, try_claim, wait_free


def test_a_claim_is_exclusive_until_released(tmp_path):
    entry = tmp_path / "ab" / "key.npz"
    first = try_claim(entry)
    assert first is not None and claim_path(entry).is_file()
    assert read_owner(claim_path(entry))["pid"] == os.getpid()
    assert try_claim(entry) is None  # held (by a live process: this one)
    first.release()
    assert not claim_path(entry).exists()
    again = try_claim(entry)
    assert again is not None
    again.release()


def _claim_of(entry: Path, **owner) -> Path:
    path = claim_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"token": "t0", **owner}))
    return path


def test_a_claim_whose_process_is_gone_is_taken_over(tmp_path):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    entry = tmp_path / "key.npz"
    _claim_of(entry, host=socket.gethostname(), pid=int(dead.stdout))
    claim = try_claim(entry)
    assert claim is not None and read_owner(claim_path(entry))["pid"] == os.getpid()
    claim.release()


def test_an_old_claim_is_stale_a_fresh_one_elsewhere_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("MODUSEG_CLAIM_STALE_S", "60")
    entry = tmp_path / "key.npz"
    path = _claim_of(entry, host="another-node", pid=1)
    assert not is_stale(path, read_owner(path))  # another machine's live-looking claim: kept
    assert try_claim(entry) is None
    old = time.time() - 61
    os.utime(path, (old, old))  # its node died: no refresh for longer than the limit
    assert is_stale(path, read_owner(path))
    claim = try_claim(entry)
    assert claim is not None
    claim.release()


def test_taking_over_never_removes_a_renewed_claim(tmp_path):
    entry = tmp_path / "key.npz"
    path = _claim_of(entry, host="another-node", pid=1)
    judged = read_owner(path)
    path.write_text(json.dumps({"token": "t1", "host": "another-node", "pid": 2}))  # taken and renewed meanwhile
    take_over(path, judged)
    assert read_owner(path)["token"] == "t1"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".stale")]
    take_over(path, read_owner(path))
    assert not path.exists()


def test_a_waiter_reads_the_entry_or_computes_when_the_owner_gives_up(tmp_path):
    entry = tmp_path / "key.json"
    claim = try_claim(entry)
    assert claim is not None

    def finish() -> None:
        time.sleep(0.5)
        entry.write_text("done")
        claim.release()

    thread = threading.Thread(target=finish)
    thread.start()
    assert wait_free(entry) == entry
    thread.join()
    other = tmp_path / "other.json"
    gave_up = try_claim(other)
    threading.Timer(0.3, gave_up.release).start()  # type: ignore[union-attr]
    assert wait_free(other) is None  # released without an entry: the waiter computes it
    with claimed(other) as hit:
        assert hit is None and claim_path(other).is_file()
        other.write_text("mine")
    assert not claim_path(other).exists()
    with claimed(other) as hit:
        assert hit == other


def _worker(folder: str, log: str) -> None:
    entries = [Path(folder) / f"{i}.txt" for i in range(8)]

    def compute(mine: list[int]) -> None:
        time.sleep(0.2)  # long enough for the other worker to find these claimed
        with open(log, "a") as f:
            for i in mine:
                f.write(f"{os.getpid()} {i}\n")
                entries[i].write_text(str(i))

    fill(entries, range(8), compute, lambda i, path: None)


def test_two_processes_fill_the_same_entries_each_once(tmp_path):
    log = tmp_path / "computed.log"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(str(tmp_path), str(log))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    computed = [int(line.split()[1]) for line in log.read_text().splitlines()]
    assert sorted(computed) == list(range(8))  # every entry once, whoever computed it
    assert all((tmp_path / f"{i}.txt").read_text() == str(i) for i in range(8))
    assert not list(tmp_path.glob(".*.claim"))


def test_the_cache_listing_ignores_claims(tmp_path):
    cache = StageCache(tmp_path)
    with cache.put("scores", "ab" * 32) as tmp:
        tmp.write_text("{}")
    claim = try_claim(cache.path("scores", "cd" * 32))
    assert [e.key for e in cache.entries()] == ["ab" * 32]
    assert cache.prune(stage="scores") == (1, 2)
    assert claim is not None and claim.path.is_file()  # a worker's claim is not the cache's to prune
    claim.release()
