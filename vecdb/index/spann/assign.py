"""Where vectors go: the head graph, the RNG replica rule and the posting cut.

Shared by the bulk build, inserts, splits, reassignment and merges. `select_replicas` finds a
batch's `candidates` nearest live heads (the head graph, `build_ef` effort asked per call: the
call asks for max(ef, k) neighbours, and the graph searches with a beam of k) and keeps up to `replicas` of them by the RNG rule (`vecdb.kernels.replicas`, fed the
search's own squared distances in the l2 space and the head rows by indexing the build's head
matrix where there is one); heads that are about to go (a merge in progress) can be excluded. `cut` caps postings at the entry budget without orphaning any
vector. Computes only: no locks, no files.
"""

from __future__ import annotations

import os
import tempfile
import time

import hnswlib
import numpy as np
import numpy.typing as npt

from vecdb.index.params import BuildParams
from vecdb.index.spann.headgraph import HeadGraph
from vecdb.index.spann.state import head_space
from vecdb.kernels.kmeans import CHUNK_BYTES, sq_dists, sq_norms
from vecdb.kernels.posting import cut_to_limit, group_by_posting
from vecdb.kernels.replicas import PARALLEL_MIN_ROWS, rng_replicas
from vecdb.kernels.topk import topk_rows

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]
REPLICA_ROWS = 8_192  # rows per head-graph query batch (bounds the (rows, ef) label arrays)
PROBE_ROWS = 1_024  # rows `graph_wins` times both candidate searches on
GRAPH_MIN_FOUND = 0.998  # share of the probe rows' `replicas` nearest heads the graph finds...
GRAPH_MAX_TIME = 0.8  # ... in at most this share of the exact product's time


def make_head_graph(
    heads: F32, metric: str, p: BuildParams, threads: int, labels: I64 | None = None
) -> HeadGraph:
    """The heads in a new head graph; label = posting id (0..n-1 unless given): hnswlib's
    graph (`hnswlib_graph`) copied into the compact `HeadGraph`, its vectors as
    `BuildParams.head_dtype` says."""
    raw = hnswlib_graph(heads, metric, p, threads, labels)
    return HeadGraph.from_hnswlib(
        raw, head_space(metric), heads.shape[1], p.head_ef_construction, p.head_dtype
    )


def hnswlib_graph(
    heads: F32, metric: str, p: BuildParams, threads: int, labels: I64 | None = None
) -> bytes:
    """hnswlib's `save_index` bytes of a graph over the heads, built on `threads` threads
    (its build is well tuned); hnswlib's index is dropped before returning."""
    graph = hnswlib.Index(space=head_space(metric), dim=heads.shape[1])
    graph.init_index(
        max_elements=max(1, len(heads)),
        M=p.head_m,
        ef_construction=p.head_ef_construction,
        random_seed=p.seed,
    )
    ids = np.arange(len(heads)) if labels is None else labels
    graph.add_items(heads, ids, num_threads=threads)
    with tempfile.TemporaryDirectory(prefix="vecdb-heads-") as tmp:
        path = os.path.join(tmp, "graph.bin")
        graph.save_index(path)
        del graph
        with open(path, "rb") as f:
            return f.read()


def nearest_heads(
    graph: HeadGraph | None, live_heads: int, x: F32, ef: int, m: int, threads: int
) -> tuple[I64, F32]:
    """The m nearest live heads of each row with search effort ef (the graph searches with
    a beam of max(ef_, k), ef_ = k, so asking for max(ef, m) and keeping m columns is a
    search at effort ef without touching shared state). `graph` may be typed optional
    (the state's field); it must be there."""
    assert graph is not None, "no head graph: the index was never built"
    m = max(1, min(m, live_heads))
    k = max(m, min(ef, live_heads))
    labels, dists = graph.knn_query(x, k=k, num_threads=threads)
    return labels[:, :m].astype(np.int64), dists[:, :m]


class ExactHeads:
    """Every head's vector by posting id, with its squared norm: the build's head matrix.
    It serves the RNG rule's head rows by plain indexing (the graph's `get_items` widens
    float16 rows; the build's matrix is the exact float32 one) and, when `exact`, the nearest
    heads themselves by blocked BLAS and a heap per row (up to `build.EXACT_HEADS` heads this
    beats the graph: one matrix product instead of ~ef x M scattered distance evaluations per
    row, and it is exact)."""

    def __init__(self, heads: F32, space: str, exact: bool = True) -> None:
        self.heads = heads  # (H, d) head vectors, row = posting id
        self.space = space  # hnswlib space of the graph it stands in for: "l2" | "ip"
        self.norms = sq_norms(heads)  # squared norms of the heads
        self.exact = exact  # whether knn is used instead of the graph

    def knn(self, x: F32, m: int) -> tuple[I64, F32 | None]:
        """The m nearest heads of each row, nearest first, with their squared L2 distances
        (None for the "ip" space, where the order is by inner product)."""
        out = np.empty((len(x), m), np.int64)
        out_d = np.empty((len(x), m), np.float32) if self.space == "l2" else None
        step = max(1, CHUNK_BYTES // (4 * max(len(self.heads), x.shape[1])))
        for lo in range(0, len(x), step):
            xs = x[lo : lo + step]
            d = sq_dists(xs, self.heads, self.norms) if self.space == "l2" else -(xs @ self.heads.T)
            # a heap per row on every core (numpy's argpartition, one core, took ~10 ns a
            # head: 84% of a GloVe-50 build with 8,757 heads, 3.5x the graph's build time)
            ids, dist = topk_rows(d, m)
            out[lo : lo + step] = ids
            if out_d is not None:
                out_d[lo : lo + step] = dist
        return out, out_d


def graph_wins(graph: HeadGraph, exact: ExactHeads, x: F32, p: BuildParams, threads: int) -> bool:
    """Whether a bulk build with few heads (the exact product possible) should still take
    its candidates from the head graph: timed side by side on PROBE_ROWS rows spread over
    x, the graph must take at most GRAPH_MAX_TIME of the exact product's time and find
    GRAPH_MIN_FOUND of each row's `replicas` nearest heads (the RNG rule's usual picks).
    Wide clustered rows pass (200,000 x 1,536 synthetic, 2,250 heads: 46-50 against 73 us a
    row, the 8 nearest all found); structureless rows fail (200,000 x 384 random: the graph
    slower and 0.89 of the 8 nearest found)."""
    heads = len(exact.heads)
    rows = x[np.linspace(0, len(x) - 1, min(len(x), PROBE_ROWS)).astype(np.int64)]
    m = min(p.candidates, heads)
    t0 = time.perf_counter()
    want, _ = exact.knn(rows, m)
    t1 = time.perf_counter()
    got, _ = nearest_heads(graph, heads, rows, p.build_ef, m, threads)
    t2 = time.perf_counter()
    r = min(p.replicas, m)
    found = float((got[:, :, None] == want[:, None, :r]).any(1).mean())
    return found >= GRAPH_MIN_FOUND and t2 - t1 <= GRAPH_MAX_TIME * (t1 - t0)


def _candidates(
    graph: HeadGraph,
    live_heads: int,
    rows: F32,
    p: BuildParams,
    m: int,
    threads: int,
    heads: ExactHeads | None,
) -> tuple[I64, F32 | None]:
    """Each row's m nearest live heads and, in the "l2" space, their squared distances."""
    if heads is not None and heads.exact:
        return heads.knn(rows, min(m, live_heads))
    labels, dists = nearest_heads(graph, live_heads, rows, p.build_ef, m, threads)
    return labels, (dists if graph.space == "l2" else None)


def select_replicas(
    graph: HeadGraph,
    live_heads: int,
    x: F32,
    p: BuildParams,
    threads: int,
    exclude: I64 | None = None,
    exact: ExactHeads | None = None,
    cap: int = 0,
) -> tuple[I64, F32]:
    """Up to `replicas` posting ids per row by the RNG rule over its `candidates` nearest
    live heads (from `exact` if it is exact, else the graph; head rows from `exact` if
    given), never one in `exclude`, at most `cap` of them if `cap` (the build's disk
    budget): (n, replicas) ids -1 padded and their squared L2 distances (inf padded),
    nearest first. Every row gets at least one posting."""
    replicas = min(p.replicas, cap) if cap else p.replicas
    out_p = np.full((len(x), replicas), -1, np.int64)
    out_d = np.full((len(x), replicas), np.inf, np.float32)
    n_ex = 0 if exclude is None else len(exclude)
    step = max(1, min(REPLICA_ROWS, CHUNK_BYTES // (4 * x.shape[1])))
    for lo in range(0, len(x), step):
        xs = x[lo : lo + step]
        todo = np.arange(len(xs))
        m = p.candidates + n_ex
        while len(todo):
            rows = xs if len(todo) == len(xs) else xs[todo]  # no copy on the first round
            par = len(todo) >= PARALLEL_MIN_ROWS
            labels, dists = _candidates(graph, live_heads, rows, p, m, threads if par else 1, exact)
            gone = np.isin(labels, exclude) if exclude is not None and n_ex else None
            if exact is not None:
                cand = labels if gone is None else np.where(gone, -1, labels)
                picked, d = rng_replicas(
                    rows, cand, exact.heads, exact.norms, p.rng_factor, replicas, dists, par
                )
            else:
                uniq, inv = np.unique(labels, return_inverse=True)
                inv = inv.reshape(labels.shape)
                if gone is not None:
                    inv[gone] = -1
                hv = np.asarray(graph.get_items(uniq), np.float32).reshape(len(uniq), -1)
                cols, d = rng_replicas(
                    rows, inv, hv, sq_norms(hv), p.rng_factor, replicas, dists, par
                )
                picked = np.where(cols >= 0, uniq[np.maximum(cols, 0)], -1)
            out_p[lo + todo], out_d[lo + todo] = picked, d
            none = picked[:, 0] < 0  # every candidate excluded: look further
            if not none.any() or m >= live_heads:
                break
            todo, m = todo[none], min(live_heads, 4 * m)
    return out_p, out_d


def disk_cap(posts: I64 | I32, limit_entries: int, dists: F32 | None = None) -> int:
    """The bulk build's disk budget, applied before the cut: at most `limit_entries` entries
    remain. With `dists` (each row's squared distances, nearest first) the replicas dropped
    are those farthest relative to their row's nearest head (the largest d_j / d_0), so a vector near one head loses its spare replicas before
    a boundary vector that needs them; a row's nearest is never dropped. Without `dists`,
    whole replica columns go, farthest first. Returns the replica cap later placements keep
    (the columns a column trim to the same budget would leave; 0 if nothing was trimmed)."""
    cols = int(posts.shape[1])
    per_col = (posts >= 0).sum(0)
    total = int(per_col.sum())
    while cols > 1 and total > limit_entries:
        cols -= 1
        total -= int(per_col[cols])
    if cols == posts.shape[1]:
        return 0
    if dists is None or posts.shape[1] < 2:
        posts[:, cols:] = -1
        return cols
    _trim_relative(posts, dists, limit_entries)
    return cols


def _trim_relative(posts: I64 | I32, dists: F32, limit_entries: int) -> None:
    """Drop the spare replicas (never column 0) with the largest distance ratio to their
    row's nearest until `limit_entries` entries remain (posts / dists edited in place)."""
    rest = posts[:, 1:] >= 0
    extra = int(rest.sum()) + int((posts[:, 0] >= 0).sum()) - limit_entries
    if extra <= 0:
        return
    if extra >= int(rest.sum()):  # every spare goes
        posts[:, 1:], dists[:, 1:] = -1, np.inf
        return
    near = np.maximum(dists[:, :1], np.float32(1e-12))
    ratio = np.where(rest, dists[:, 1:] / near, -np.inf).astype(np.float32)
    # the `extra` largest ratios go (ties at the cut go too); rows are nearest first, so
    # their ratios ascend and each row loses a suffix: rows stay -1 padded
    flat = ratio.ravel()
    cut_at = np.partition(flat, len(flat) - extra)[len(flat) - extra]
    mask = ratio >= cut_at
    posts[:, 1:][mask] = -1
    dists[:, 1:][mask] = np.inf


def cut(posts: I64 | I32, dists: F32, limit: int, n_postings: int) -> BOOL:
    """Keep each posting's `limit` nearest entries and every row's nearest entry; returns
    the kept mask of `posts` ((n, r), -1 padded)."""
    keep = posts >= 0
    starts, rows, cols = group_by_posting(posts, keep, n_postings)
    cut_to_limit(posts, dists, keep, starts, rows, cols, limit)
    return keep


def primaries(posts: I64 | I32, keep: BOOL) -> I64:
    """Each row's primary posting: its nearest kept one (columns are nearest first)."""
    first = keep.argmax(1)
    out: I64 = posts[np.arange(len(posts)), first].astype(np.int64)
    return out
