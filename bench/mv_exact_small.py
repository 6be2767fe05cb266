"""Small trained document collections: every document scored exactly against the pipeline.

    python bench/mv_exact_small.py 128    # (and 32): token width

One embedded database in memory; for 64 .. 1,024 documents of 32 clustered tokens it trains
the codebook (`optimize`), then times 100 queries of 32 tokens three times each way, the
default pipeline (`EXACT_TOKENS` 0) and every document exact (`EXACT_TOKENS` huge), and
prints the median ms a query, recall@10 against exact MaxSim in numpy and whether the search
reported itself exact. Chose `vecdb.index.multivector.search.EXACT_TOKENS` (PARAMS.md).
"""

import sys
import time

import numpy as np

import vecdb
from vecdb.index.multivector import search

D, TOKENS = int(sys.argv[1]), 32
rng = np.random.default_rng(0)
centers = rng.standard_normal((256, D)).astype(np.float32)


def doc(n: int) -> np.ndarray:
    c = centers[rng.integers(0, 256, n)]
    return (c + 0.5 * rng.standard_normal((n, D))).astype(np.float32)


def exact_top10(q: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    unit = [d / np.linalg.norm(d, axis=1, keepdims=True) for d in docs]
    s = np.array([(qn @ u.T).max(1).sum() for u in unit])
    return np.argsort(-s, kind="stable")[:10]


with vecdb.connect(":memory:") as c:
    for ndocs in (64, 128, 256, 512, 1024):
        name = f"c{ndocs}"
        c.create_collection(name, dim=D, kind="multivector")
        docs = [doc(TOKENS) for _ in range(ndocs)]
        c.upsert_documents(name, list(range(ndocs)), docs)
        c.optimize(name)
        qs = [doc(TOKENS) for _ in range(100)]
        row = {}
        for label, cap in (("pipeline", 0), ("exact", 10**9)):
            search.EXACT_TOKENS = cap
            times, recall, exact = [], [], 0.0
            for rep in range(3):
                for q in qs:
                    t = time.perf_counter()
                    r = c.search_documents(name, q, k=10)
                    times.append(time.perf_counter() - t)
                    if rep == 0:
                        got = set(r.ids[0].tolist())
                        recall.append(len(got & set(exact_top10(q, docs).tolist())) / 10)
                    exact = r.stats["exact"]
            row[label] = f"{np.median(times) * 1e3:.2f} ms, recall {np.mean(recall):.3f}, exact {exact:g}"
        print(f"d={D} docs={ndocs} tokens={ndocs * TOKENS}: " + "; ".join(f"{k} {v}" for k, v in row.items()), flush=True)
