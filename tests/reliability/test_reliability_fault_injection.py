"""Faults injected into the index's file writes, over many seeds: short writes, EIO and
ENOSPC on writes, EIO on fsync, then a power cut that keeps, reverts or garbles every
unsynced 4 KiB sector. While faults fire, every search answers exactly or fails loudly; a
failed build or maintenance step leaves the previous index serving and is retried; after
the faults stop, the next optimize succeeds; after the power cut the database reopens and
answers exactly for every acknowledged write. CI: SEEDS = 30 seeds (~1.5 s each);
VECDB_RELIABILITY_SCALE=34 gives 1,020. Real RocksDB, real SPANN, in-process (a crash would fail the run).
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from file_faults import Injector
from reliability_data import ALL, SCALE, K, build, open_db, queries, vectors, wrong_rows

from vecdb.errors import VecdbError
from vecdb.index.spann import framing

pytestmark = pytest.mark.slow  # ~1-2 minutes each in CI
SEEDS = 30 * SCALE
BASE = 600
MODES = ("short", "eio", "enospc", "fsync", "mixed")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("faults") / "db"
    return path, build(path, n=BASE)


def injector(seed: int) -> tuple[str, Injector]:
    rng = random.Random(seed)
    mode = MODES[seed % len(MODES)]
    p = rng.uniform(0.05, 0.4)
    inj = Injector(rng)
    if mode in ("short", "mixed"):
        inj.p_short = 0.5
    if mode in ("eio", "mixed"):
        inj.p_eio = p / (2 if mode == "mixed" else 1)
    if mode in ("enospc", "mixed"):
        inj.p_enospc = p / (2 if mode == "mixed" else 1)
    if mode in ("fsync", "mixed"):
        inj.p_fsync = p
    return mode, inj


def exact_or_loud(db: object, live: dict[int, np.ndarray]) -> str:
    ids = np.fromiter(live, np.int64)
    base = np.stack([live[i] for i in ids.tolist()])
    q = queries(10)
    try:
        got = db.search("c", q, k=K, params=ALL).ids  # type: ignore[attr-defined]
    except VecdbError:
        return "loud"
    pos = {int(i): j for j, i in enumerate(ids.tolist())}
    rows = np.vectorize(lambda i: pos.get(int(i), -1))(got)
    return "wrong" if wrong_rows(rows, base, q) else "exact"


def one_seed(src: Path, x: np.ndarray, seed: int, work: Path) -> Counter[str]:
    out: Counter[str] = Counter()
    rng = np.random.default_rng(seed)
    path = work / f"s{seed}"
    shutil.copytree(src, path)
    live = {i: x[i] for i in range(len(x))}
    mode, inj = injector(seed)
    db = open_db(path, retry_seconds=0.05)
    try:
        framing.faults = inj
        for step in range(2):
            new = vectors(150, seed=1000 * seed + step)
            ids = list(range(BASE + 150 * step, BASE + 150 * (step + 1)))
            db.upsert("c", ids, new)  # RocksDB is not faulted: always acknowledged
            live.update(zip(ids, new, strict=True))
            gone = [int(i) for i in rng.choice(list(live), 20, replace=False)]
            db.delete("c", gone)
            for i in gone:
                del live[i]
            try:
                db.optimize("c", timeout=60)
                out["optimize_ok"] += 1
            except VecdbError:
                out["optimize_failed"] += 1  # the job is retried; the old index serves
            out[exact_or_loud(db, live)] += 1
        framing.faults = None
        db.optimize("c", timeout=120)  # faults gone: the retried work succeeds
        out["recovered_" + exact_or_loud(db, live)] += 1
    finally:
        framing.faults = None
        db.close()
    fates = inj.power_cut()
    out["sectors_garbled"] += fates["garbage"]
    db = open_db(path)
    try:
        verdict = exact_or_loud(db, live)
        db.optimize("c", timeout=120)
        out["after_cut_" + verdict] += 1
        out["after_cut_optimized_" + exact_or_loud(db, live)] += 1
        assert db.count("c") == len(live)
    finally:
        db.close()
    shutil.rmtree(path)
    out["faults"] += inj.failures
    out["short_writes"] += inj.short
    out["mode_" + mode] += 1
    return out


def test_index_write_faults_over_many_seeds(
    pristine: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """SEEDS seeds of write faults and power cuts: 0 wrong answers, 0 crashes, every
    acknowledged write present, and the index always recovers once faults stop."""
    src, x = pristine
    total: Counter[str] = Counter()
    for seed in range(SEEDS):
        total += one_seed(src, x, seed, tmp_path)
    print(f"fault injection: {SEEDS} seeds, {dict(sorted(total.items()))}")
    assert total["wrong"] == 0 and total["recovered_wrong"] == 0
    assert total["after_cut_wrong"] == 0 and total["after_cut_optimized_wrong"] == 0
    assert total["recovered_exact"] == SEEDS  # once the faults stop, exact answers again
    assert total["after_cut_optimized_exact"] == SEEDS
    assert total["faults"] > 0 and total["short_writes"] > 0
