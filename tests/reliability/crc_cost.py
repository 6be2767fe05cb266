"""The cost of checking every posting block a search scans (not a test: a measurement).

Builds a SPANN index of GloVe-50 (the benchmark's prepared data set) once, then times the
same batch of queries with block checks off (bounds and header only, no CRC), with the
CRC cached per write (the default: each block hashed once until rewritten) and with the CRC
of every block at every read, interleaved round by round so the machine's noise hits all
three alike; prints QPS per mode and max_postings, and the ratio to "off".

    PYTHONPATH=. python tests/reliability/crc_cost.py [--io mmap|direct] [--queries 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vecdb.bench.datasets import load_dataset
from vecdb.index.spann import blockcheck, open_spann


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--io", default="mmap", choices=["mmap", "direct"])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--postings", default="16,64")
    args = ap.parse_args()
    ds = load_dataset("glove-50")
    q = ds.queries[: args.queries]
    with tempfile.TemporaryDirectory(prefix="crc-cost-") as tmp:
        idx, _ = open_spann(ds.base.shape[1], "cosine", {"io": args.io}, Path(tmp))
        t0 = time.perf_counter()
        idx.build(np.arange(len(ds.base)), ds.base)
        print(f"built {len(ds.base):,} x {ds.base.shape[1]} in {time.perf_counter() - t0:.0f} s")
        modes = ("off", "cached", "always")
        qps: dict[tuple[str, int], list[float]] = {}
        recall: dict[tuple[str, int], float] = {}
        for m in [int(x) for x in args.postings.split(",")]:
            blockcheck.MODE = "cached"
            idx.search(q, 10, {"max_postings": m})  # warm: page cache, CRC cache, numba
            for _ in range(args.rounds):
                for mode in modes:
                    blockcheck.MODE = mode
                    t = time.perf_counter()
                    res = idx.search(q, 10, {"max_postings": m})
                    qps.setdefault((mode, m), []).append(len(q) / (time.perf_counter() - t))
                    hits = [
                        len(set(r) & set(g))
                        for r, g in zip(res.slots, ds.gt_ids[: len(q), :10], strict=True)
                    ]
                    recall[(mode, m)] = sum(hits) / (10 * len(q))
        blockcheck.MODE = "cached"
        print(f"io={args.io}, {len(q)} queries per batch, median of {args.rounds} rounds")
        for (mode, m), v in sorted(qps.items(), key=lambda kv: (kv[0][1], modes.index(kv[0][0]))):
            base = statistics.median(qps[("off", m)])
            med = statistics.median(v)
            print(
                f"max_postings={m:4d} {mode:7s} QPS {med:9.0f}  x{med / base:5.3f} of off"
                f"  recall@10 {recall[(mode, m)]:.4f}"
            )
        idx.close()


if __name__ == "__main__":
    main()
