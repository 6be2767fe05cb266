"""Issue 12: the engine's `vector_dtype="bits"` against today's float16 default, side by side.

    python -m vecdb.bench.spann_bits_engine --dataset minilm-384 --queries 1000 --out FILE \
        [--configs f16 bits bits-x4 bits-x12] [--bits-rerank-k R] [--sweep-r 50 100 200]

The harness of `vecdb.bench.spann_defaults` (same builds at the index level, every build
parameter spelled out; the smallest `max_postings` reaching `--target` per configuration;
rounds alternating the configurations: 1-thread batch QPS by CPU time, all-thread QPS, single
query p50 / p99, KB read per query warm, optional cold rows; sizes and build seconds) with
"bits" configurations added: 1-bit postings with float16 rows, R = the index's default
rerank_k (or `--bits-rerank-k`), at three posting sizes: "bits" (posting_vectors 200, like
float16's entry count per posting), "bits-x4" and "bits-x12" (4x and 12x the entries per
posting, head_fraction cut as much: 12x is what float16's page budget holds in 65-byte
entries at 384-d). `--sweep-r` then reports, on each bits index at its calibrated
max_postings, recall and 1-thread CPU QPS for other R (the same queries, alternated).
Owns only this experiment; every number comes from the run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np

from vecdb.bench import spann_defaults as sd
from vecdb.bench.spann_rerank import K, _recall, prepared

_BITS = {"vector_dtype": "bits", "rerank": "float16"}
BITS_CONFIGS: dict[str, dict[str, Any]] = {
    "bits": _BITS | {"head_fraction": 0.045, "posting_vectors": 200},
    "bits-x4": _BITS | {"head_fraction": 0.045 / 4, "posting_vectors": 800},
    "bits-x12": _BITS | {"head_fraction": 0.045 / 12, "posting_vectors": 2400},
}
_plain = sd._search_params
_bits_r: list[int | None] = [None]


def _search_params(name: str, m: int, rerank_k: int) -> dict[str, Any]:
    """Bits configurations take the index's own rerank_k (or --bits-rerank-k)."""
    if name.startswith("bits"):
        r = _bits_r[0]
        return {"max_postings": m} | ({} if r is None else {"rerank_k": r})
    return _plain(name, m, rerank_k)


def sweep_r(out: dict[str, Any], work: Path, n: int, rs: list[int], rounds: int) -> None:
    """Recall and 1-thread CPU QPS of each bits index at its calibrated max_postings for
    each R in `rs` (alternated per round, medians)."""
    ds, base, q, truth = prepared(out["dataset"], n, out["queries"])
    numba.set_num_threads(1)
    for name, m in out["max_postings"].items():
        if not name.startswith("bits"):
            continue
        idx = sd._open(work / name, base.shape[1], ds.metric, BITS_CONFIGS[name] | {"io": "mmap"})
        rows: dict[int, list[tuple[float, float]]] = {}
        for r in rs:  # warm-up
            idx.search(q[:100], K, {"max_postings": m, "rerank_k": r})
        for rnd in range(rounds):
            for r in rs if rnd % 2 == 0 else rs[::-1]:
                c = time.process_time()
                got = idx.search(q, K, {"max_postings": m, "rerank_k": r})
                cpu = time.process_time() - c
                rows.setdefault(r, []).append((_recall(got.slots, truth), len(q) / cpu))
        out[f"{name}:sweep_r"] = {
            r: {"recall@10": v[0][0], "qps_cpu_1t": float(np.median([x[1] for x in v]))}
            for r, v in rows.items()
        }
        print(name, "sweep_r", out[f"{name}:sweep_r"], flush=True)
        idx.close()


def main() -> None:
    sd.CONFIGS.update(BITS_CONFIGS)
    sd._search_params = _search_params
    argv = sys.argv[1:]
    rs: list[int] = []
    if "--bits-rerank-k" in argv:
        i = argv.index("--bits-rerank-k")
        _bits_r[0] = int(argv[i + 1])
        del argv[i : i + 2]
    if "--sweep-r" in argv:
        i = argv.index("--sweep-r")
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            rs.append(int(argv[j]))
            j += 1
        del argv[i:j]
    if rs and "--reuse" not in argv:
        raise SystemExit("--sweep-r needs --reuse DIR (the indexes are reopened after the run)")
    out_path = argv[argv.index("--out") + 1] if "--out" in argv else None
    sys.argv = [sys.argv[0], *argv]
    sd.main()
    if rs and out_path:
        out = json.loads(Path(out_path).read_text())
        n = int(argv[argv.index("--n") + 1]) if "--n" in argv else 0
        sweep_r(out, Path(argv[argv.index("--reuse") + 1]), n, rs, 3)
        Path(out_path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
