"""Issue 12: 1-bit posting codes (RaBitQ) with an exact float16 rerank, measured offline on a
built SPANN index, side by side with its float16 scan.

    python -m vecdb.bench.spann_bits --dataset minilm-384 --queries 1000 \\
        --index /tmp/spann-minilm --out bench/spann_bits_minilm384.json

Opens the index in `--index` (built there with the default parameters if it is not; reused
otherwise) and, for each `max_postings` P, finds the postings each query's search probes (its
own passes 1 and 2: `assign.nearest_heads`, `search.select_postings`, default `head_ef` and
`prune_ratio`). Every probed posting's live entries are read once (`update.read_live`) and
coded in memory (`kernels.bitscan`; one random rotation) against the posting's head vector,
with the rotated query quantized once per query ("posting": the centroid's part folded into
the entry's factors, ||q - c||^2 taken from the head search's distances) or per posting
("posting-requant": RaBitQ's own form), and against the mean of the data ("global": a code
then does not depend on its posting). Per query, on the same entries: (a) the exact float16
scan (numpy over the entries' rows; its recall is checked against `idx.search`); (b) per
variant and rerank size R, the bit search (`bitscan.scan_rerank`: estimates, best R distinct
slots, exact rerank from the float16 rows, top 10). Times, 1 thread, every method once per
query in a fresh random order (none always follows another, whose reads would have evicted
its data), as thread CPU time (`time.thread_time`: the host is shared, and CPU time leaves
out the waits for a core; wall time beside): `idx.search` of the one query (the index's own single-query path: heads and
float16 scan in one kernel), its head search alone (passes 1-2 from Python), its float16 scan
alone (`search.scan` on those postings) and each bit search. The bit path's estimated time per
query is head + bit search; its gain is the median over queries of full / (head + bits).
Bytes per entry and per query for both layouts (see `_bytes`, `_pages`); `--report FILE`
prints a result file as markdown (`spann_bits_report`). Owns only this experiment; every
number comes from this run; nothing here changes the index.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from vecdb.bench.environment import git_revision, load_average
from vecdb.bench.spann_bits_report import report
from vecdb.bench.spann_rerank import K, _recall, add_data_arguments, prepared
from vecdb.index.base import SearchStats
from vecdb.index.params import PAGE_SIZE, SearchParams, prune_ratio_for
from vecdb.index.spann import search
from vecdb.index.spann.assign import nearest_heads
from vecdb.index.spann.index import SpannIndex
from vecdb.index.spann.state import SpannState
from vecdb.index.spann.update import read_live
from vecdb.kernels import posting
from vecdb.kernels.bitscan import QUERY_BITS, encode, rotation, scan_factors, scan_rerank
from vecdb.kernels.hamming import code_words
from vecdb.kernels.headgraph import search_batch
from vecdb.kernels.posting import ALWAYS_READ, METRIC_CODE, NO_VISIBLE, prune_postings

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
ENCODE_ROWS = 65_536  # entries rotated and coded per step (bounds the float64 temporaries)
# per entry in a lane group: ||r|| and <x_bar, o>, bfloat16 each (the block layout's)
FACTOR_BYTES = posting.BITS_FACTOR_WORDS * 8 // posting.BITS_GROUP
SLOT_BYTES = posting.SLOT_BYTES + 1  # per entry: slot (uint32) and version (uint8)
BLOCK_HEADER = 64  # bytes of a block's header (kernels.posting)
# Centroids and query forms of the bit search: the posting's head with the rotated query
# quantized once ("posting") or per posting (the paper's form), or one global centroid.
VARIANTS = ("posting", "posting-requant", "global")


def open_or_build(directory: Path, base: F32, metric: str) -> SpannIndex:
    """The index in `directory` (float16 postings, the scan the bit codes are measured
    against; otherwise default parameters, warm reader), built there first if it holds none
    with len(base) live entries."""
    params = {"io": "mmap", "vector_dtype": "float16"}
    idx, _ = SpannIndex.open(base.shape[1], metric, params, directory)
    if len(idx) != len(base):
        t = time.perf_counter()
        idx.build(np.arange(len(base)), base)
        idx.checkpoint(1)
        print(f"built {directory} in {time.perf_counter() - t:.0f} s", flush=True)
    return idx


def head_kernels(st: SpannState, q: F32, p: int, sp: SearchParams) -> Any:
    """Passes 1-2 of one query as the single-query path runs them, kernels only (the head
    graph's `search_batch`, `prune_postings`; no Python wrapper): a callable i -> posting
    ids of query i, to time the head search the bit path would keep."""
    g = st.heads()
    m = min(p, st.live_heads)
    hk = max(m, min(sp.head_ef, st.live_heads))
    out_i, out_d = np.empty((1, hk), np.int64), np.empty((1, hk), np.float32)
    args: tuple[Any, ...] = (
        g.kernel_vecs, g.links, g.nlinks, g.deleted, g.up_off, g.up_links, g.up_cnt, g.entry,
        g.maxlevel, g.n, hk, hk, g.space == "ip", out_i, out_d, *g.scratch(),
    )  # fmt: skip
    ip = st.metric == "ip"

    def heads(i: int) -> I64:
        search_batch(q[i : i + 1], 0, 1, *args)
        labels = g.labels[out_i[:, :m]]
        sel: I64 = prune_postings(
            labels, out_d[:, :m], ip, prune_ratio_for(sp, st.metric), ALWAYS_READ
        )[0]
        return sel

    return heads


def probed(st: SpannState, q: F32, p: int, sp: SearchParams) -> tuple[I64, F32]:
    """Passes 1-2 of the search: each query's posting ids at max_postings p, -1 pruned,
    and the squared distances to their heads."""
    labels, hd = nearest_heads(st.graph, st.live_heads, q, sp.head_ef, min(p, st.live_heads), 1)
    return search.select_postings(labels, hd, st.metric, sp), hd


class Entries:
    """Every probed posting's live entries, by posting id (CSR), with their float16 rows by
    slot and their codes against each centroid variant."""

    def __init__(self, st: SpannState, postings: I64, mean: F32, rot: F32) -> None:
        npost = len(st.table.post_first)
        d = st.dim
        self.rows = np.zeros((len(st.slot_version), d), np.uint16)  # float16 bits by slot
        counts = np.zeros(npost + 1, np.int64)
        slots: list[I64] = []
        parts: list[tuple[I64, F32]] = []
        for p in postings.tolist():  # ascending: the CSR order
            s, v, _ = read_live(st, p)
            counts[p + 1] = len(s)
            slots.append(s)
            parts.append((np.full(len(s), p, np.int64), v))
            self.rows[s] = v.astype(np.float16).view(np.uint16)  # exact: v is float16 widened
        self.ptr: I64 = np.cumsum(counts)
        self.slots: I64 = np.concatenate(slots)
        heads = np.zeros((npost, d), np.float32)
        heads[postings] = st.head_vectors(postings)
        self.centers = {
            "posting": np.ascontiguousarray(heads @ rot, np.float32),
            "global": np.ascontiguousarray(mean[None] @ rot, np.float32),
        }
        self.codes: dict[str, tuple[Any, F32, F32]] = {}  # variant: (codes, add, mul)
        owner = np.concatenate([o for o, _ in parts])
        vecs = np.concatenate([v for _, v in parts])
        for name, centroid in (("posting", heads[owner]), ("global", mean[None])):
            chunks = []
            for lo in range(0, len(vecs), ENCODE_ROWS):
                mid = _rows(centroid, lo)
                res = (vecs[lo : lo + ENCODE_ROWS] - mid) @ rot
                codes, norms, xo = encode(res)
                add, mul = scan_factors(res, norms, xo)
                folded = scan_factors(res, norms, xo, mid @ rot)[0] if name == "posting" else add
                chunks.append((codes, add, mul, folded))
            codes, add, mul, folded = (np.concatenate(c) for c in zip(*chunks, strict=True))
            if name == "posting":  # q @ rot quantized once; the paper's form: per posting
                self.codes["posting"] = (codes, folded, mul)
                self.codes["posting-requant"] = (codes, add, mul)
            else:
                self.codes[name] = (codes, add, mul)


def _rows(centroid: F32, lo: int) -> F32:
    """Rows lo:lo+ENCODE_ROWS of a per-entry centroid matrix, or the one global row."""
    return centroid if len(centroid) == 1 else centroid[lo : lo + ENCODE_ROWS]


def exact_top(q: F32, rows: npt.NDArray[np.uint16], slots: I64, metric: str) -> I64:
    """Top-K slots among `slots` by the exact distance of their float16 rows (ties by slot)."""
    u = np.unique(slots)
    r = rows[u].view(np.float16).astype(np.float32)
    dist = (
        ((r - q) ** 2).sum(1) if metric == "l2" else 1 - r @ q if metric == "cosine" else -(r @ q)
    )
    out: I64 = u[np.lexsort((u, dist))[:K]]
    return out


def _bits_bytes(d: int) -> int:
    """Bytes of one coded entry: the code, its factors, its slot and version."""
    return -(-d // 8) + FACTOR_BYTES + SLOT_BYTES


def _pages(counts: I64, per_entry: int) -> int:
    """4 KiB pages of postings of `counts` entries, each one block starting on a page."""
    return int((-(-(BLOCK_HEADER + counts * per_entry) // PAGE_SIZE)).sum())


def _bytes(d: int, entries: float, candidates: float, postings: float) -> dict[str, float]:
    """Bytes per entry and per query: float16 rows (2d + slot and version) against 1-bit
    codes (ceil(d / 8) + factors + slot and version) plus the rerank's float16 rows (one
    row, 2d bytes, per candidate; or one 4 KiB page each when every row is its own read)."""
    f16, bits = 2 * d + SLOT_BYTES, _bits_bytes(d)
    return {
        "f16_bytes_per_entry": f16,
        "bits_bytes_per_entry": bits,
        "f16_kb_per_query": (entries * f16 + postings * BLOCK_HEADER) / 1e3,
        "bits_kb_per_query": (entries * bits + postings * BLOCK_HEADER + candidates * 2 * d) / 1e3,
        "bits_kb_per_query_rerank_pages": (
            entries * bits + postings * BLOCK_HEADER + candidates * PAGE_SIZE
        )
        / 1e3,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The measurement at 1 numba thread; the caller's thread count is restored after (a run
    in a test process would otherwise leave every later test on one thread)."""
    threads = numba.get_num_threads()
    try:
        return _run(args)
    finally:
        numba.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    ds, base, q, truth = prepared(args.dataset, args.n, args.queries)
    if ds.metric not in ("l2", "cosine"):
        raise SystemExit("the estimate is of squared L2 distance: l2 or cosine data only")
    numba.set_num_threads(1)
    out: dict[str, Any] = {
        "dataset": args.dataset,
        "n": len(base),
        "d": base.shape[1],
        "queries": len(q),
        "git": git_revision()[0],
        "load_start": load_average(),
        "rows": [],
    }
    idx = open_or_build(Path(args.index), base, ds.metric)
    st = idx.state
    d = st.dim
    found_heads = {
        p: probed(st, q, p, SearchParams.parse({"max_postings": p})) for p in args.postings
    }
    sel = {p: v[0] for p, v in found_heads.items()}
    head_sq = {p: np.ascontiguousarray(v[1], np.float32) for p, v in found_heads.items()}
    union = np.unique(np.concatenate([s.ravel() for s in sel.values()]))
    union = union[union >= 0]
    t = time.perf_counter()
    rot = rotation(d, args.seed)
    ent = Entries(st, union, base.mean(0).astype(np.float32), rot)
    out["prepare_s"] = time.perf_counter() - t
    out["entries_coded"] = len(ent.slots)
    print(f"{len(union)} postings, {len(ent.slots)} entries coded in {out['prepare_s']:.0f} s")
    metric = METRIC_CODE[st.metric]
    held = np.zeros(-(-len(ent.rows) // 8), np.uint8)  # the bit search's slot bitmap
    w = code_words(d)
    rmax = max(args.rerank)
    scratch = (np.empty(rmax, np.float32), np.empty(rmax, np.int64), held)
    vecs = (
        np.empty(d, np.float32),
        np.empty(d, np.float32),
        np.empty((QUERY_BITS, w), np.uint64),
    )

    def bits(i: int, row: I64, hsq: F32, variant: str, r: int) -> tuple[I64, int, int]:
        ids, dd = np.empty(K, np.int64), np.empty(K, np.float32)
        codes, add, mul = ent.codes[variant]
        sc = (scratch[0][:r], scratch[1][:r], held)
        centers = ent.centers["global" if variant == "global" else "posting"]
        n, cand = scan_rerank(
            q[i], rot, row, hsq, ent.ptr, codes, add, mul, ent.slots, centers, variant != "global",
            variant == "posting-requant", r, ent.rows, metric, *sc, *vecs, ids, dd,
        )  # fmt: skip
        return ids, int(n), int(cand)

    def f16(i: int, row: I64) -> I64:
        ids, dd = np.full((1, K), -1, np.int64), np.full((1, K), np.inf, np.float32)
        search.scan(st, q[i : i + 1], row[None], NO_VISIBLE, False, ids, dd, SearchStats())
        out: I64 = ids[0]
        return out

    for p in args.postings:
        sp = SearchParams.parse({"max_postings": p})
        batch = idx.search(q, K, {"max_postings": p})  # also warms the pages and kernels
        exact = np.stack(
            [exact_top(q[i], ent.rows, _entries(ent, sel[p][i]), st.metric) for i in range(len(q))]
        )
        methods: list[tuple[str, Any]] = [
            ("full", lambda i, p=p: idx.search(q[i : i + 1], K, {"max_postings": p}).slots[0]),
            ("head", lambda i, p=p, sp=sp: probed(st, q[i : i + 1], p, sp)[0][0]),
            ("head_kernels", head_kernels(st, q, p, sp)),
            ("f16scan", lambda i, s=sel[p]: f16(i, s[i])),
        ]
        for variant in VARIANTS:
            for r in args.rerank:
                fn = _bind(bits, sel[p], head_sq[p], variant, r)
                methods.append((f"bits:{variant}:R={r}", fn))
        for _, fn in methods:  # compile and warm
            for i in range(min(20, len(q))):
                fn(i)
        times = {name: np.empty(len(q)) for name, _ in methods}  # thread CPU seconds
        walls = {name: np.empty(len(q)) for name, _ in methods}
        found: dict[str, list[Any]] = {name: [] for name, _ in methods}
        rng = np.random.default_rng(args.seed)
        for i in range(len(q)):  # a fresh order per query: no method always follows another
            for m in rng.permutation(len(methods)).tolist():
                name, fn = methods[m]
                t0, c0 = time.perf_counter(), time.thread_time()
                res = fn(i)
                times[name][i] = time.thread_time() - c0
                walls[name][i] = time.perf_counter() - t0
                found[name].append(res)
        n_ent = np.mean([len(_entries(ent, sel[p][i])) for i in range(len(q))])
        n_post = float((sel[p] >= 0).sum(1).mean())
        counts = np.diff(ent.ptr)
        pages = {  # KB if each probed posting were one page-aligned block of whole pages
            name: float(np.mean([_pages(counts[s[s >= 0]], per) for s in sel[p]])) * PAGE_SIZE / 1e3
            for name, per in (("f16", 2 * d + SLOT_BYTES), ("bits", _bits_bytes(d)))
        }
        full, head = times["full"], times["head"]
        row: dict[str, Any] = {
            "max_postings": p,
            "postings_per_query": n_post,
            "entries_per_query": float(n_ent),
            "recall_index_batch": _recall(batch.slots, truth),
            "recall_exact_f16": _recall(exact, truth),
            "index_kb_read_per_query": batch.stats.bytes_read / len(q) / 1e3,
            "f16_kb_pages_per_query": pages["f16"],
            "bits_kb_pages_per_query": pages["bits"],
            "us_full": float(np.median(full) * 1e6),
            "us_head": float(np.median(head) * 1e6),
            "us_f16scan": float(np.median(times["f16scan"]) * 1e6),
            "us_full_minus_head": float(np.median(full - head) * 1e6),
            "us_head_kernels": float(np.median(times["head_kernels"]) * 1e6),
            "wall_us_full": float(np.median(walls["full"]) * 1e6),
            "wall_us_head": float(np.median(walls["head"]) * 1e6),
            "wall_us_f16scan": float(np.median(walls["f16scan"]) * 1e6),
            "variants": [],
        }
        for name in found:
            if name.startswith("bits"):
                _, variant, rr = name.split(":")
                r = int(rr[2:])
                ids = np.stack([f[0] for f in found[name]])
                cand = float(np.mean([f[2] for f in found[name]]))
                tb = times[name]
                row["variants"].append(
                    {
                        "centroid": variant,
                        "R": r,
                        "recall": _recall(ids, truth),
                        "candidates": cand,
                        "us_bits": float(np.median(tb) * 1e6),
                        "scan_ratio_f16scan_over_bits": float(np.median(times["f16scan"] / tb)),
                        "scan_ratio_full_minus_head_over_bits": float(
                            np.median((full - head) / tb)
                        ),
                        "qps_gain_est": float(np.median(full / (head + tb))),
                        "qps_gain_est_kernels": float(
                            np.median(full / (times["head_kernels"] + tb))
                        ),
                        "wall_us_bits": float(np.median(walls[name]) * 1e6),
                        "qps_gain_est_wall": float(
                            np.median(walls["full"] / (walls["head"] + walls[name]))
                        ),
                    }
                    | _bytes(d, float(n_ent), cand, n_post)
                )
        same = all(
            np.array_equal(a, b) for a, b in zip(found["head"], found["head_kernels"], strict=True)
        )
        assert same, "the kernels-only head search disagrees with passes 1-2"
        row["recall_full_single"] = _recall(np.stack(found["full"]), truth)
        row["recall_f16scan"] = _recall(np.stack(found["f16scan"]), truth)
        out["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "variants"}), flush=True)
        for v in row["variants"]:
            print("  ", json.dumps(v), flush=True)
    out["load_end"] = load_average()
    idx.close()
    return out


def _entries(ent: Entries, row: I64) -> I64:
    """The slots of a query's probed postings' entries (replicas repeated)."""
    parts = [ent.slots[ent.ptr[p] : ent.ptr[p + 1]] for p in row.tolist() if p >= 0]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _bind(fn: Any, sel: I64, head_sq: F32, variant: str, r: int) -> Any:
    """fn(i, sel[i], head_sq[i], variant, r) as a one-argument callable (bound now, not
    late in the loop)."""
    return lambda i: fn(i, sel[i], head_sq[i], variant, r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(ap)
    ap.add_argument("--report", default=None, help="print a result file as markdown, then exit")
    ap.add_argument("--index", default=None, help="directory of the index (built if empty)")
    ap.add_argument("--postings", type=int, nargs="+", default=[32, 48, 64])
    ap.add_argument("--rerank", type=int, nargs="+", default=[20, 50, 100, 200, 400])
    ap.add_argument("--seed", type=int, default=0, help="seed of the random rotation")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return
    if args.index is None:
        ap.error("--index is required")
    res = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
