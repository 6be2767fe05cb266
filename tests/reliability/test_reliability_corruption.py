"""Corruption sweep: every kind of file the database writes (posting files, the index's
state, head graph and manifest, the data directory's manifest, RocksDB's SST files, WAL,
MANIFEST, CURRENT and options, snapshot files) is damaged on a copy of a database at rest
(bit flips, truncation, a zeroed 4 KiB page, deletion), and a child process opens it,
searches, lets the worker repair what it can and searches again.

What must hold, per case: no crash (the child runs to the end: no SIGSEGV / SIGBUS), no
exception outside the vecdb error tree, and every answer is either the exact one (compared
with the source vectors) or a loud vecdb error; 0 silently wrong results. CI runs SEEDS
seeds per (file kind, damage); VECDB_RELIABILITY_SCALE multiplies them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reliability_data import SCALE, N, build, open_db, vectors, wrong_rows

pytestmark = pytest.mark.slow  # ~1-2 minutes each in CI
SEEDS = 2 * SCALE
CHILD = Path(__file__).parent / "sweep_child.py"
EXTRA = 200  # points written after the build: only in the op log, the WAL and the buffer


def flip_bits(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def truncate(path: Path, rng: random.Random) -> None:
    size = path.stat().st_size
    os.truncate(path, int(size * rng.uniform(0.0, 0.95)))


def zero_page(path: Path, rng: random.Random) -> None:
    size = path.stat().st_size
    page = rng.randrange(max(1, -(-size // 4096)))
    with open(path, "r+b") as f:
        f.seek(page * 4096)
        f.write(bytes(min(4096, size - page * 4096)))


def delete(path: Path, rng: random.Random) -> None:
    path.unlink()


DAMAGE: dict[str, Callable[[Path, random.Random], None]] = {
    "flip": flip_bits,
    "truncate": truncate,
    "zero_page": zero_page,
    "delete": delete,
}
FILES: dict[str, str] = {  # kind -> glob under the data directory
    "postings": "collections/*/postings.*.bin",
    "state": "collections/*/state.*.bin",
    "heads": "collections/*/heads.*.bin",
    "index_manifest": "collections/*/MANIFEST",
    "data_manifest": "MANIFEST.json",
    "sst": "kv/*.sst",
    "wal": "kv/*.log",
    "rocksdb_manifest": "kv/MANIFEST-*",
    "rocksdb_current": "kv/CURRENT",
    "rocksdb_options": "kv/OPTIONS-*",
    "snapshot_rows": "snapshots/c/*/rows.bin",
    "snapshot_postings": "snapshots/c/*/index/postings.*.bin",
    "snapshot_manifest": "snapshots/c/*/SNAPSHOT.json",
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, str]:
    """A database with an index of N points, a snapshot of them, and EXTRA later points in
    the op log only; the source vectors of all points (id = row) and the snapshot's name."""
    path = tmp_path_factory.mktemp("pristine") / "db"
    x = build(path)
    db = open_db(path)
    snap = db.create_snapshot("c").name
    extra = vectors(EXTRA, seed=7)
    db.upsert("c", list(range(N, N + EXTRA)), extra)
    db.close()
    return path, np.concatenate([x, extra]), snap


CRASH_WRITER = """
import os, sys
sys.path.insert(0, {here!r})
from pathlib import Path
from reliability_data import open_db, vectors
db = open_db(Path({path!r}))
db.upsert("c", list(range({lo}, {hi})), vectors({n}, seed=8))
os._exit(0)  # no close: the last writes live only in RocksDB's WAL and the op log
"""


@pytest.fixture(scope="module")
def crashed(
    pristine: tuple[Path, np.ndarray, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, np.ndarray, str]:
    """The pristine database after a process wrote EXTRA more points and died without
    closing: RocksDB's WAL holds them."""
    src, base, snap = pristine
    path = tmp_path_factory.mktemp("crashed") / "db"
    shutil.copytree(src, path)
    lo = len(base)
    code = CRASH_WRITER.format(
        here=str(CHILD.parent), path=str(path), lo=lo, hi=lo + EXTRA, n=EXTRA
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    assert any(p.stat().st_size for p in (path / "kv").glob("*.log"))
    return path, np.concatenate([base, vectors(EXTRA, seed=8)]), snap


def run_children(cases: list[dict[str, Any]], workdir: Path) -> tuple[dict[str, Any], set[str]]:
    """Run the cases in as few children as crashes allow; (results by name, crashed)."""
    results: dict[str, Any] = {}
    crashed: set[str] = set()
    todo = list(cases)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CHILD.parent), *sys.path]))
    while todo:
        spec = workdir / "cases.json"
        spec.write_text(json.dumps(todo))
        proc = subprocess.run(
            [sys.executable, str(CHILD), str(spec)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        started = None
        for line in proc.stdout.splitlines():
            msg = json.loads(line)
            if "start" in msg:
                started = msg["start"]
            else:
                results[msg["case"]] = msg
                started = None
        done = {c["name"] for c in todo if c["name"] in results}
        if started is not None:  # the child died inside this case
            crashed.add(started)
            done.add(started)
        elif proc.returncode != 0 and len(done) < len(todo):
            raise AssertionError(f"child failed outside a case: {proc.stderr[-2000:]}")
        todo = [c for c in todo if c["name"] not in done]
    return results, crashed


def judge(res: dict[str, Any], base: np.ndarray, prefix: int = 0) -> str:
    """'exact', 'loud' (a vecdb error, no answer), 'wal_prefix' (exact over the first
    `prefix` points: the writes after the damage in a WAL are gone, whole requests) or
    'wrong:<why>'."""
    if prefix and judge(res, base[:prefix]) == "exact":
        return "wal_prefix"
    steps = [res.get(s) for s in ("open", "restore", "search", "optimize", "after", "count")]
    for step in steps:
        if step and step.get("code") == "ESCAPED":
            return f"wrong:escaped {step['error']}: {step['message']}"
    if "open" in res:
        return "loud"
    from reliability_data import queries

    q = queries()
    loud = False
    for name in ("search", "after"):
        step = res[name]
        if "error" in step:
            loud = True
            continue
        bad = wrong_rows(np.asarray(step["ok"]), base, q)
        if bad:
            return f"wrong:{name} {bad} rows"
    if "ok" in res["count"] and res["count"]["ok"] != len(base):
        return f"wrong:count {res['count']['ok']} != {len(base)}"
    return "loud" if loud else "exact"


@pytest.mark.parametrize("variant", ["clean", "crashed"])
def test_corruption_sweep(
    variant: str,
    pristine: tuple[Path, np.ndarray, str],
    crashed: tuple[Path, np.ndarray, str],
    tmp_path: Path,
) -> None:
    """Every file kind x every damage x SEEDS seeds, on a database closed cleanly and on one
    whose last writes live only in the WAL: 0 crashes, 0 silently wrong results."""
    src, base, snap = pristine if variant == "clean" else crashed
    cases: list[dict[str, Any]] = []
    for kind, pattern in FILES.items():
        for damage, fn in DAMAGE.items():
            for seed in range(SEEDS):
                rng = random.Random(f"{kind}/{damage}/{seed}")
                name = f"{kind}/{damage}/{seed}"
                d = tmp_path / name.replace("/", "_")
                shutil.copytree(src, d)
                targets = sorted(d.glob(pattern))
                assert targets, f"no file matches {pattern}"
                if damage != "delete":  # an empty file (a WAL after a clean close) has no bytes
                    targets = [t for t in targets if t.stat().st_size] or targets
                target = rng.choice(targets)
                if damage != "delete" and target.stat().st_size == 0:
                    shutil.rmtree(d)
                    continue
                fn(target, rng)
                restore = snap if kind.startswith("snapshot") else None
                cases.append({"name": name, "dir": str(d), "restore": restore})
    results, crashed = run_children(cases, tmp_path)
    # The WAL of an unclean shutdown is the only copy of its writes: damage there loses the
    # requests from the damaged record on (a prefix survives), which RocksDB cannot tell
    # from a torn unacknowledged tail. Counted apart; anywhere else it would be wrong.
    verdicts = {
        name: judge(r, base, len(base) - EXTRA if name.startswith("wal/") else 0)
        for name, r in results.items()
        if name not in crashed
    }
    tally = Counter(v.split(":")[0] for v in verdicts.values())
    tally["crash"] = len(crashed)
    wrong = {k: v for k, v in verdicts.items() if v.startswith("wrong")}
    # `vecdb inspect --verify` (run on each damaged copy before it was opened) must have
    # reported damage wherever the database itself found some (a loud answer, a quarantine).
    unseen = [
        name
        for name, r in results.items()
        if name not in crashed
        and r.get("verify_ok")
        and (verdicts[name] == "loud" or r.get("degraded", {}).get("ok"))
    ]
    tally["verify_flagged"] = sum(not r.get("verify_ok") for r in results.values())
    assert variant == "crashed" or tally["wal_prefix"] == 0
    print(f"corruption sweep ({variant}): {len(cases)} cases, {dict(tally)}")
    assert not crashed, f"crashed: {sorted(crashed)}"
    assert not wrong, json.dumps(wrong, indent=1)
    assert not unseen, f"inspect --verify said ok but the database found damage: {unseen}"
