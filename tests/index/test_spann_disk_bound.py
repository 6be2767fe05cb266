"""The posting file stays within 4x the raw float32 bytes of the live vectors through a bulk
load, an online load and a churn of 1024-d vectors (structureless: the hard case, where the
RNG rule keeps nearly every replica). Driven through the index directly, one maintenance
batch per call, so the size is checked after every batch of rewrites, and the search must
still find what was stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecdb.index.spann import open_spann
from vecdb.index.spann.index import SpannIndex

DIM = 1024
BOUND = 4.0  # posting file bytes / raw float32 bytes of the live vectors
# the budget these tests hold the file to (the default was 4.0 when they were written; with
# 3.0 a bulk build of structureless vectors fills 0.95 of the budget and the 0.97 guard
# leaves maintenance too little room to split in so small a test)
PARAMS = {"threads": 1, "max_disk_ratio": BOUND}


def normal(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Watch:
    """Records the worst file size / raw bytes seen; `raw_n` is the largest live count of
    the current phase (a delete does not shrink the file at once, so churn is measured
    against the collection's size, not against the moment after the delete)."""

    def __init__(self, idx: SpannIndex) -> None:
        self.idx, self.worst, self.raw_n = idx, 0.0, 1

    def check(self) -> None:
        st = self.idx.state
        self.raw_n = max(self.raw_n, st.n_live)
        ratio = st.file.length / (4 * DIM * self.raw_n)
        self.worst = max(self.worst, ratio)
        assert ratio <= BOUND, f"posting file {ratio:.2f}x raw: {st.file.space.stats()}"

    def settle(self) -> None:
        """Run maintenance one batch at a time until none is left, checking each step."""
        for _ in range(100_000):
            more = self.idx.maintain(0.0)
            self.check()
            if not more:
                break
        self.idx.checkpoint(self.idx.state.applied_seq)
        self.check()


def test_posting_file_stays_within_4x_raw_through_bulk_online_and_churn(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    idx, _ = open_spann(DIM, "cosine", PARAMS, tmp_path)
    watch = Watch(idx)
    # Bulk load
    x = normal(rng, 3000)
    idx.build(np.arange(3000), x)
    idx.checkpoint(1)
    watch.check()
    stored = {i: x[i] for i in range(3000)}
    # Online load: half as much again, in batches, maintenance after each
    nxt = 3000
    for _ in range(3):
        y = normal(rng, 500)
        idx.add(np.arange(nxt, nxt + 500), y)
        stored.update(zip(range(nxt, nxt + 500), y, strict=True))
        nxt += 500
        watch.check()
        watch.settle()
    # Churn: delete a tenth, insert as many new, three times
    for _ in range(3):
        gone = rng.choice(np.array(sorted(stored)), size=len(stored) // 10, replace=False)
        idx.remove(gone)
        for g in gone.tolist():
            del stored[g]
        y = normal(rng, len(gone))
        idx.add(np.arange(nxt, nxt + len(gone)), y)
        stored.update(zip(range(nxt, nxt + len(gone)), y, strict=True))
        nxt += len(gone)
        watch.check()
        watch.settle()
    assert len(idx) == len(stored)
    assert idx.state.counters["splits"] > 0 and idx.state.counters["gc"] > 0  # it did work
    # Everything stored is still found (reading every posting)
    probe = np.array(sorted(stored)[:: max(1, len(stored) // 200)])
    q = np.stack([stored[i] for i in probe])
    res = idx.search(q, 1, {"max_postings": 4096, "prune_ratio": 1e9})
    np.testing.assert_array_equal(res.slots[:, 0], probe)
    idx.close()


def test_posting_file_stays_within_4x_raw_when_a_fifth_is_deleted_then_upserted_again(
    tmp_path: Path,
) -> None:
    """The churn shape of the ingest benchmark: a fifth of the vectors deleted, then the same
    vectors upserted again (new slots, as the engine gives a re-upserted id), in batches with
    maintenance between. Deletes lower the budget under the file; the clean-ups they call
    for must not grow it past 4x the collection's raw bytes."""
    rng = np.random.default_rng(5)
    n = 2000
    idx, _ = open_spann(DIM, "cosine", PARAMS, tmp_path)
    watch = Watch(idx)
    x = normal(rng, n)
    idx.build(np.arange(n), x)
    idx.checkpoint(1)
    watch.settle()
    gone = rng.choice(n, size=n // 5, replace=False)
    idx.remove(gone)
    watch.check()
    new_slot = {}
    for i, part in enumerate(np.array_split(gone, 4)):
        slots = n + i * len(gone) + np.arange(len(part))
        new_slot.update(zip(part.tolist(), slots.tolist(), strict=True))
        idx.add(slots, x[part])
        watch.check()
        for _ in range(3):  # the worker runs a few batches between two drains
            idx.maintain(0.0)
            watch.check()
    watch.settle()
    assert len(idx) == n
    assert idx.state.counters["gc"] > 0  # the deleted entries were reclaimed
    # Every re-added vector is found under its new slot (reading every posting)
    probe = gone[:100]
    res = idx.search(x[probe], 1, {"max_postings": 4096, "prune_ratio": 1e9})
    np.testing.assert_array_equal(res.slots[:, 0], [new_slot[g] for g in probe.tolist()])
    idx.close()


def test_clean_ups_and_defrag_moves_copy_bits_entries_as_coded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rewrite of a "bits" posting's own entries (the 1,024-d default), a clean-up or a
    defragmenting move, copies them as coded: nothing is coded during one, and every
    posting's visible entries are bit for bit what they were before it."""
    from vecdb.index.spann import compaction
    from vecdb.index.spann.bitcodes import BitCoder
    from vecdb.index.spann.update import read_live

    rng = np.random.default_rng(11)
    idx, _ = open_spann(DIM, "cosine", PARAMS, tmp_path)
    st = idx.state
    assert st.is_bits
    idx.build(np.arange(3000), normal(rng, 3000))
    idx.checkpoint(1)
    seen = {"inside": False, "coded": 0, "clean": 0, "defrag": 0}
    real_encode = BitCoder.encode

    def encode(self: BitCoder, vectors: np.ndarray) -> np.ndarray:
        seen["coded"] += seen["inside"]
        return real_encode(self, vectors)

    def watched(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def rewrite(*args: Any) -> Any:
            before = {p: read_live(st, p, coded=True) for p in range(st.next_posting)
                      if st.is_posting(p)}  # fmt: skip
            seen["inside"] = True
            try:
                done = real(*args)
            finally:
                seen["inside"] = False
            for p, (slots, entries, vers) in before.items():
                now = read_live(st, p, coded=True)
                np.testing.assert_array_equal(now[0], slots)
                np.testing.assert_array_equal(now[1], entries)
                np.testing.assert_array_equal(now[2], vers)
            seen[name] += int(done)
            return done

        return rewrite

    monkeypatch.setattr(BitCoder, "encode", encode)
    monkeypatch.setattr(compaction, "clean_batch", watched("clean", compaction.clean_batch))
    monkeypatch.setattr(compaction, "defrag_batch", watched("defrag", compaction.defrag_batch))
    live, nxt = np.arange(3000), 3000
    for _ in range(3):  # churn: a tenth deleted, as many new, maintenance to the end
        gone = rng.choice(live, size=len(live) // 10, replace=False)
        idx.remove(gone)
        idx.add(np.arange(nxt, nxt + len(gone)), normal(rng, len(gone)))
        live = np.r_[np.setdiff1d(live, gone), np.arange(nxt, nxt + len(gone))]
        nxt += len(gone)
        for _ in range(100_000):
            if not idx.maintain(0.0):
                break
    idx.remove(rng.choice(live, size=len(live) * 3 // 5, replace=False))  # clean-ups due
    for _ in range(100_000):
        if not idx.maintain(0.0):
            break
    assert seen["clean"] > 0 and seen["defrag"] > 0, seen  # both kinds of rewrite happened
    assert seen["coded"] == 0
    idx.close()
