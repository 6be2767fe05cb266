"""Offline study: residual widths spent unevenly over a document's tokens by salience.

Owns the measurement behind issue 11's last target (recall@10 >= 0.95 vs exact MaxSim at
<= 40 B/token read at d = 128): the default codec's centroids (`codec.train`, default
`MVBuildParams`), and for each residual width its own product books (`codec.train_books`) and
codes (`codec.encode_residuals`, anisotropic, as the engine stores them). A token's rerank
score for query token i is q_i . c + q_i . r^ (centroid plus residual byte table: what
`kernels.maxsim.residual_maxsim` sums), equal to q_i . (c + r^), so every document is scored
here from the decoded tokens c + r^ through the engine's exact kernel (float32; the test
checks it against the residual kernel run per query token and class). A setting gives each
token a width class by a salience score (client attention, centroid IDF, residual norm, or
how often the token wins a max for held-out training queries: first lines of documents that
are not test queries), either by global quantiles or by rank inside its document; MaxSim is
order-free inside a document, so the engine could keep one doc-major residual array per class.
Reports recall@10 (tie-aware, `metrics`) of the residual score over EVERY document and the
mean residual bytes per token. Reads the tier cache, writes its own training-query cache and
one JSON of rows; must not touch the engine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit
from threadpoolctl import threadpool_limits

from vecdb.bench.multivector import embed, metrics
from vecdb.bench.multivector.embed import MVData, load_tier
from vecdb.bench.multivector.scoring import maxsim, top_k
from vecdb.bench.multivector.truth import exact_scores
from vecdb.index.multivector import codec as mvcodec
from vecdb.index.multivector.params import MVBuildParams
from vecdb.kernels.bitpack import book_slots, build_lut, code_bits, pack_codes, row_bytes
from vecdb.kernels.maxsim import FLOOR, centroid_scores, residual_best, residual_maxsim
from vecdb.kernels.simd import LANES, vsplat, vsum

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
K = metrics.K
TRAIN_QUERIES = 1000  # held-out first lines scored for the win counts (not the test queries)
TOP_DOCS = 100  # the win counts of `wins_top` only count documents in a query's exact top this
SCORE_CHUNK = 512  # query tokens per scoring product in `win_counts`
# Widths (bytes per residual row) trained per tier; 0 = centroid only. Below 2 d / 8 the
# books are 1-bit (8 dimensions a byte at most), from there 2-bit (4 a byte).
WIDTHS = {128: (0, 16, 24, 32, 36, 40, 48, 56, 64, 96), 50: (0, 7, 10, 13, 16, 20, 25, 32, 50)}
BUDGETS = {128: (32.0, 36.0), 50: (13.0, 16.0)}
# Stage 1 compares every salience ranking on these (wide, narrow) pairs per budget.
SCREEN = {128: ((64, 16), (48, 24), (96, 24), (64, 0)), 50: ((25, 7), (20, 10), (32, 7), (25, 0))}
LAGRANGE_SETS = {
    128: ((96, 64, 48, 32, 16), (64, 48, 40, 32, 24, 16), (96, 64, 48, 40, 36, 32, 24, 16, 0)),
    50: ((32, 20, 13, 7), (25, 20, 16, 13, 10, 7), (50, 32, 25, 20, 16, 13, 10, 7, 0)),
}
LATENCY_SEED = 20261201  # the timing pass' per-query orders
CAND_TOP = 200  # per query, the top of the exact and of the coarsest residual scores scored


@dataclass
class Width:
    """One residual width: its books, every token's codes and the decoded tokens c + r^."""

    nbytes: int
    bits: int  # 1 or 2 (0 for the centroid-only class)
    books: F32  # (P, 256, per)
    codes: U8  # (N, P)
    decoded: F32  # (N, d)


def decode(codes: U8, books: F32, d: int) -> F32:
    """Residuals (n, d) of product byte codes: each byte's codeword in its `book_slots`."""
    nb, _, per = books.shape
    slots = book_slots(d, nb, per)
    xp = np.empty((len(codes), nb * per), np.float32)
    for p in range(nb):
        xp[:, p * per : (p + 1) * per] = books[p][codes[:, p]]
    out = np.zeros((len(codes), d), np.float32)
    used = slots >= 0
    out[:, slots[used]] = xp[:, used]
    return out


def bits_for(d: int, nbytes: int) -> int:
    """1-bit books below the 2-bit natural width, else 2-bit."""
    return 1 if nbytes < row_bytes(d, 2) else 2


def train_width(
    tokens: F32, centroids: F32, codes: I64, nbytes: int, seed: int, train_rows: I64 | None = None
) -> Width:
    """Books of `nbytes` per row trained on the residuals of `train_rows` (default: all
    tokens), and every token coded with them."""
    d = tokens.shape[1]
    centre = centroids[codes]
    if nbytes == 0:
        return Width(0, 0, np.zeros((0, 256, 1), np.float32), np.zeros((len(tokens), 0), np.uint8),
                     np.ascontiguousarray(centre))  # fmt: skip
    resid = tokens - centre
    b = bits_for(d, nbytes)
    fit = resid if train_rows is None else resid[train_rows]
    if len(fit) > mvcodec.QUANTILE_SAMPLE:  # what `codec.train` hands `train_books`
        pick = np.random.default_rng(seed).choice(len(fit), mvcodec.QUANTILE_SAMPLE, False)
        fit = fit[np.sort(pick)]
    books = mvcodec.train_books(np.ascontiguousarray(fit), b, seed, nbytes)
    out = np.empty((len(tokens), books.shape[0]), np.uint8)
    step = mvcodec.ENCODE_CHUNK
    for lo in range(0, len(tokens), step):
        out[lo : lo + step] = mvcodec.encode_residuals(
            resid[lo : lo + step], tokens[lo : lo + step], books
        )
    dec = centre + decode(out, books, d)
    return Width(nbytes, b, books, out, np.ascontiguousarray(dec, np.float32))


# --- salience scores ----------------------------------------------------------------------------


def doc_rank(score: npt.NDArray[np.floating], offsets: I64) -> npt.NDArray[np.float64]:
    """Each token's rank fraction inside its document, (rank + 0.5) / n, 0 = most salient."""
    out = np.empty(len(score), np.float64)
    for i in range(len(offsets) - 1):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        if hi > lo:
            order = np.argsort(-score[lo:hi], kind="stable")
            r = np.empty(hi - lo, np.float64)
            r[order] = (np.arange(hi - lo) + 0.5) / (hi - lo)
            out[lo:hi] = r
    return out


def global_rank(score: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Each token's rank fraction over all tokens, 0 = most salient."""
    order = np.argsort(-np.asarray(score, np.float64), kind="stable")
    out = np.empty(len(score), np.float64)
    out[order] = (np.arange(len(score)) + 0.5) / len(score)
    return out


def win_counts(
    tokens: F32, offsets: I64, queries: F32, q_offsets: I64, top: int = TOP_DOCS
) -> tuple[F32, F32]:
    """Per token: how many query tokens of `queries` it is its document's best match for,
    over every document (`all`) and over each query's exact top `top` documents only."""
    n_docs, nq = len(offsets) - 1, len(q_offsets) - 1
    lengths = np.diff(offsets)
    starts = offsets[:-1]
    wins_all = np.zeros(len(tokens), np.float32)
    wins_top = np.zeros(len(tokens), np.float32)
    j = 0
    while j < nq:
        hi = j + 1
        while hi < nq and q_offsets[hi + 1] - q_offsets[j] <= SCORE_CHUNK:
            hi += 1
        cols = queries[q_offsets[j] : q_offsets[hi]]
        s = tokens @ cols.T  # (N, c)
        best = np.maximum.reduceat(s, starts, axis=0)  # (D, c)
        owner = np.repeat(np.arange(hi - j), np.diff(q_offsets[j : hi + 1]))
        doc_score = np.zeros((n_docs, hi - j), np.float32)
        np.add.at(doc_score.T, owner, best.T)
        in_top = np.zeros((n_docs, hi - j), bool)
        for c in range(hi - j):
            in_top[top_k(doc_score[:, c], top)[0], c] = True
        win = s >= np.repeat(best, lengths, axis=0)
        wins_all += win.sum(axis=1)
        wins_top += (win & np.repeat(in_top[:, owner], lengths, axis=0)).sum(axis=1)
        j = hi
    return wins_all, wins_top


def train_queries(data: MVData, cache_dir: Path, n: int = TRAIN_QUERIES) -> tuple[F32, I64]:
    """Held-out queries: the first lines of up to `n` documents that are not a test query's
    (a seeded sample), embedded as the tier embeds its queries; cached beside the tier."""
    tier, max_docs = embed.parse_tier(data.tier)
    path = (
        cache_dir.expanduser()
        / f"mv-varwidth-trainq-{tier}{'' if max_docs is None else f'-{max_docs}'}"
    )
    stamp = {"checksum": data.meta["checksum"], "n": n}
    if (path / "meta.json").is_file() and json.loads((path / "meta.json").read_text()) == stamp:
        return np.load(path / "queries.npy"), np.load(path / "q_offsets.npy")
    g, vocab, _ = embed._glove()
    sel = embed._select(vocab, max_docs, 10**9)  # every document with a query
    test = set(int(x) for x in data.labels)
    pool = [(i, w) for i, w in zip(sel.queries, sel.query_words, strict=True) if i not in test]
    pick = np.random.default_rng(1).choice(len(pool), min(n, len(pool)), replace=False)
    pool = [pool[int(i)] for i in np.sort(pick)]
    if tier == "t2":
        from vecdb.bench import minilm

        cfg, w, tokenize, _sha = minilm.load_model()
        proj = embed.projection(cfg.hidden, embed.T2_DIM)
        texts = [" ".join(sel.docs[i].first_line.split()) for i, _ in pool]
        ids = [[t[0], *t[1:-1][: embed.T2_MAX_PIECES], t[-1]] for t in tokenize(texts)]
        seqs = [embed._normalise(h[1:-1] @ proj) for h, _a in minilm.encode_tokens(cfg, w, ids)]
    else:
        seqs = [
            embed.contextual(g[np.asarray(qw)]) if tier == "t1-ctx" else g[np.asarray(qw)]
            for _, qw in pool
        ]
    q, off = embed._pack(seqs)
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "queries.npy", q)
    np.save(path / "q_offsets.npy", off)
    (path / "meta.json").write_text(json.dumps(stamp))
    return q, off


# --- scoring --------------------------------------------------------------------------------------


def residual_scores(decoded: F32, offsets: I64, data: MVData) -> F32:
    """(n_queries, n_docs) residual MaxSim of every query over every document, from the
    decoded tokens c + r^ through the engine's exact kernel (float32)."""
    out = np.empty((data.n_queries, len(offsets) - 1), np.float32)
    for j in range(data.n_queries):
        out[j] = maxsim(data.query(j), decoded, offsets)
    return out


@dataclass
class Candidates:
    """Per query the documents whose residual score can reach its top 10 (see `candidates`),
    as token rows and local offsets, so a setting is scored on them alone."""

    docs: list[I64]  # per query, the candidate documents
    rows: list[I64]  # per query, their token rows back to back
    starts: list[I64]  # per query, where each candidate's rows start in `rows`


def candidates(rankings: list[F32], n: int, offsets: I64) -> Candidates:
    """Per query the union of the top `n` of every score matrix in `rankings` (the exact
    scores, and the coarsest residual scores)."""
    out = Candidates([], [], [])
    for j in range(len(rankings[0])):
        docs = np.unique(np.concatenate([top_k(r[j], n)[0] for r in rankings]))
        sizes = offsets[docs + 1] - offsets[docs]
        out.docs.append(docs)
        out.rows.append(np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in docs]))
        out.starts.append(np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64))
    return out


def cand_recall(
    decoded: F32, cand: Candidates, data: MVData, exact: npt.NDArray[np.float64]
) -> float:
    """Mean tie-aware recall@10 of the residual score of `decoded` ranked over the
    candidates of each query (equal to the ranking over every document when the candidates
    hold its top 10; `run` checks this on the uniform widths)."""
    acc = []
    for j in range(data.n_queries):
        s = decoded[cand.rows[j]] @ data.query(j).T
        score = np.maximum.reduceat(s, cand.starts[j], axis=0).sum(axis=1)
        found = cand.docs[j][top_k(score, K)[0]]
        acc.append(metrics.recall_vs_exact(exact[j], found))
    return float(np.mean(acc))


def recall(approx: F32, exact: npt.NDArray[np.float64]) -> float:
    """Mean tie-aware recall@10 of the approximate ranking vs the exact scores."""
    return float(np.mean([metrics.recall_vs_exact(exact[j], top_k(approx[j], K)[0])
                          for j in range(len(exact))]))  # fmt: skip


def mix(widths: list[Width], which: npt.NDArray[np.integer]) -> F32:
    """Decoded tokens with token t taken from widths[which[t]]."""
    out = np.empty_like(widths[0].decoded)
    for c, w in enumerate(widths):
        sel = which == c
        out[sel] = w.decoded[sel]
    return out


def classes(rank: npt.NDArray[np.float64], shares: tuple[float, ...]) -> npt.NDArray[np.int64]:
    """Class of each token by its rank fraction: the first shares[0] go to class 0, etc."""
    edges = np.cumsum(shares)[:-1]
    return np.searchsorted(edges, rank, side="right").astype(np.int64)


Split = tuple[tuple[int, ...], tuple[float, ...]]


def pair(hi: int, lo: int, budget: float) -> Split:
    """Two classes averaging `budget` bytes."""
    f = (budget - lo) / (hi - lo)
    return (hi, lo), (f, 1.0 - f)


def triple(hi: int, mid: int, lo: int, top: float, budget: float) -> Split | None:
    """Three classes, the top share given, the bottom share solved for `budget` (None when
    no share of at least 5 % per class does)."""
    # top * hi + (1 - top - f) * mid + f * lo = budget
    f = (budget - top * hi - (1 - top) * mid) / (lo - mid)
    if not 0.05 <= f <= 1 - top - 0.05:
        return None
    return (hi, mid, lo), (top, 1 - top - f, f)


# --- a prototype rerank kernel over width classes, for timing ---------------------------------


@njit(cache=True, nogil=True, fastmath=True)
def _classes_serial(skq, bits, p0, l0, d0, o0, p1, l1, d1, o1, p2, l2, d2, o2, cand, out):  # type: ignore[no-untyped-def]
    width = skq.shape[1]
    sf, f0, f1, f2 = skq.reshape(-1), l0.reshape(-1), l1.reshape(-1), l2.reshape(-1)
    for c in range(cand.shape[0]):
        doc = cand[c]
        total = np.float32(0.0)
        for o in range(0, width, LANES):
            best = vsplat(FLOOR)
            best = residual_best(best, sf, p0, bits, f0, d0, width, o0[doc], o0[doc + 1], o)
            best = residual_best(best, sf, p1, bits, f1, d1, width, o1[doc], o1[doc + 1], o)
            best = residual_best(best, sf, p2, bits, f2, d2, width, o2[doc], o2[doc + 1], o)
            total += vsum(best)
        out[c] = total


@dataclass
class ClassStore:
    """One width class as the engine would keep it: doc-major residual bytes, packed centroid
    codes and per-document offsets of the class's tokens, and its books."""

    books: F32
    data: U8  # (n_c, P_c)
    packed: U8
    offsets: I64  # (D + 1,)


def class_stores(
    widths: list[Width], which: npt.NDArray[np.integer], codes: I64, offsets: I64, k: int
) -> list[ClassStore]:
    """The classes of a split (tokens keep their document order inside a class)."""
    n_docs = len(offsets) - 1
    doc_of = np.repeat(np.arange(n_docs), np.diff(offsets))
    bits = code_bits(k)
    out = []
    for c, w in enumerate(widths):
        sel = which == c
        off = np.zeros(n_docs + 1, np.int64)
        off[1:] = np.cumsum(np.bincount(doc_of[sel], minlength=n_docs))
        out.append(ClassStore(w.books, np.ascontiguousarray(w.codes[sel]),
                              pack_codes(codes[sel], bits), off))  # fmt: skip
    return out


def class_luts(q: F32, stores: list[ClassStore], width: int) -> list[F32]:
    """Each class's byte table of q, built as the engine builds one (`build_lut`, padded)."""
    empty = np.zeros((0, 256, width), np.float32)
    return [build_lut(q, st.books, width) if st.data.shape[1] else empty for st in stores]


def classes_rerank(
    q: F32, skq: F32, stores: list[ClassStore], bits: int, cand: I64,
    luts: list[F32] | None = None,
) -> F32:  # fmt: skip
    """Residual MaxSim of `cand` over up to three width classes: per query token the best
    over every class's tokens (not the best of per-class sums), then the sum; the byte tables
    `luts` of the classes built here when not given (`class_luts`)."""
    width = skq.shape[1]
    empty_l = np.zeros((0, 256, width), np.float32)
    luts = class_luts(q, stores, width) if luts is None else luts
    args = []
    for i in range(3):
        if i < len(stores):
            st = stores[i]
            args += [st.packed, luts[i], st.data, st.offsets]
        else:
            z = np.zeros(len(stores[0].offsets), np.int64)
            args += [stores[0].packed, empty_l, np.zeros((0, 0), np.uint8), z]
    out = np.empty(len(cand), np.float32)
    kernel: Any = _classes_serial  # a numba dispatcher (mypy sees its decorator's signature)
    kernel(skq, bits, *args, cand, out)
    return out


def time_rerank(
    data: MVData, exact: npt.NDArray[np.float64], centroids: F32, codes: I64,
    uniform: Width, split: tuple[list[Width], npt.NDArray[np.integer]],
    n_queries: int = 100, n_cand: int = 96, rounds: int = 7,
) -> dict[str, float]:  # fmt: skip
    """Per query p50 ms (median over `rounds`) of the rerank of `n_cand` documents (the exact
    top: the default pipeline reranks 96) with byte tables built per query: the engine's
    `residual_maxsim` at the uniform width, the prototype kernel on the same single class, and
    the prototype on the split's classes; and the engine's and the split's kernels alone (tables
    built outside the timer); alternated per query in a seeded random order."""
    k = len(centroids)
    bits = code_bits(k)
    packed = pack_codes(codes, bits)
    one = class_stores([uniform], np.zeros(len(codes), np.int64), codes, data.offsets, k)
    many = class_stores(*split, codes, data.offsets, k)
    n = min(n_queries, data.n_queries)
    names = ("engine_uniform", "proto_uniform", "proto_split", "engine_uniform_kernel",
             "proto_split_kernel")  # fmt: skip
    times = np.zeros((len(names), rounds, n))
    rng = np.random.default_rng(LATENCY_SEED)

    def call(i: int, q: F32, skq: F32, cand: I64, lu: F32, ls: list[F32]) -> F32:
        if i in (0, 3):  # 3: the table built outside the timer
            out = np.empty(len(cand), np.float32)
            lut = build_lut(q, uniform.books, skq.shape[1]) if i == 0 else lu
            residual_maxsim(lut, uniform.codes, data.offsets, cand, out, skq, packed, bits)
            return out
        if i == 4:
            return classes_rerank(q, skq, many, bits, cand, ls)
        return classes_rerank(q, skq, one if i == 1 else many, bits, cand)

    for r in range(-1, rounds):  # round -1 warms up (and compiles)
        for j in range(n):
            q = data.query(j)
            skq = centroid_scores(centroids, q)
            cand = np.sort(top_k(exact[j], n_cand)[0])
            lu = build_lut(q, uniform.books, skq.shape[1])
            ls = class_luts(q, many, skq.shape[1])
            for i in rng.permutation(len(names)).tolist():
                t0 = time.perf_counter()
                call(i, q, skq, cand, lu, ls)
                if r >= 0:
                    times[i, r, j] = time.perf_counter() - t0
    med = np.median(times, axis=1) * 1e3  # (3, n) ms
    out = {f"{nm}_p50_ms": float(np.median(med[i])) for i, nm in enumerate(names)}
    out["split_over_engine"] = float(np.median(med[2] / med[0]))
    out["split_over_proto_uniform"] = float(np.median(med[2] / med[1]))
    out["split_over_engine_kernel_only"] = float(np.median(med[4] / med[3]))
    return out


def coding_error(tokens: F32, decoded: F32) -> npt.NDArray[np.float64]:
    """Per token |e|^2 + (ANISO_ETA - 1)(u . e)^2, e = token - decoded, u = the token's
    direction: the error the residual encoder minimises."""
    e = (tokens - decoded).astype(np.float64)
    u = tokens / np.maximum(np.linalg.norm(tokens, axis=1, keepdims=True), 1e-12)
    along = np.einsum("ij,ij->i", u, e)
    out: npt.NDArray[np.float64] = np.einsum("ij,ij->i", e, e) + (mvcodec.ANISO_ETA - 1) * along**2
    return out


def lagrange(
    err: npt.NDArray[np.float64], ws: npt.NDArray[np.float64], budget: float
) -> npt.NDArray[np.int64]:
    """Width class of each token minimising err[c, t] + lam * ws[c], lam bisected so that the
    mean bytes come as close to `budget` from below as 60 halvings get (the allocation that
    minimises the total coding error at that mean)."""
    lo, hi = 0.0, 1.0
    while float(ws[np.argmin(err + hi * ws[:, None], axis=0)].mean()) > budget:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(ws[np.argmin(err + mid * ws[:, None], axis=0)].mean()) > budget:
            lo = mid
        else:
            hi = mid
    which: npt.NDArray[np.int64] = np.argmin(err + hi * ws[:, None], axis=0).astype(np.int64)
    return which


def cached_codec(data: MVData, cache_dir: Path) -> tuple[F32, I64, F32]:
    """(centroids, codes, idf) of the default codec trained on the tier, cached."""
    path = _cache(data, cache_dir) / "codec.npz"
    if path.is_file():
        z = np.load(path)
        return z["centroids"], z["codes"], z["idf"]
    codec, codes = mvcodec.train(data.tokens, MVBuildParams.parse({}), 1, unit=True)
    np.savez(path, centroids=codec.centroids, codes=codes, idf=codec.idf)
    return codec.centroids, codes, codec.idf


def cached_width(data: MVData, cache_dir: Path, centroids: F32, codes: I64, nb: int) -> Width:
    """`train_width` of every token at `nb` bytes, its books and codes cached."""
    path = _cache(data, cache_dir) / f"w{nb}.npz"
    centre = centroids[codes]
    if path.is_file():
        z = np.load(path)
        dec = centre + decode(z["codes"], z["books"], data.dim) if nb else centre
        return Width(
            nb, int(z["bits"]), z["books"], z["codes"], np.ascontiguousarray(dec, np.float32)
        )
    w = train_width(data.tokens, centroids, codes, nb, MVBuildParams.parse({}).seed)
    np.savez(path, books=w.books, codes=w.codes, bits=w.bits)
    return w


def _cache(data: MVData, cache_dir: Path) -> Path:
    path = cache_dir.expanduser() / f"mv-varwidth-{data.tier.replace(':', '-')}"
    path.mkdir(parents=True, exist_ok=True)
    stamp = path / "meta.json"
    want = {"checksum": data.meta["checksum"]}
    if not stamp.is_file() or json.loads(stamp.read_text()) != want:
        for f in path.glob("*.npz"):
            f.unlink()
        stamp.write_text(json.dumps(want))
    return path


def run(
    spec: str, cache_dir: Path, out: Path, budgets: tuple[float, ...] = (),
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:  # fmt: skip
    """Uniform widths, then per budget every ranking on a few splits (stage 1), then the two
    error-driven allocations and the best salience ranking on every pair of widths around the
    budget and every triple with a quarter of the tokens at the widest (stage 2), then the
    error-driven allocation over more classes (stage 3)."""
    t_start = time.perf_counter()
    data = load_tier(spec, cache_dir, 300, progress=log)
    exact = exact_scores(data)
    d = data.dim
    centroids, codes, idf = cached_codec(data, cache_dir)
    log(f"{spec}: K = {len(centroids)}, {len(data.tokens):,} tokens x {d}")
    widths: dict[int, Width] = {}
    for nb in WIDTHS[d]:
        t0 = time.perf_counter()
        widths[nb] = cached_width(data, cache_dir, centroids, codes, nb)
        log(f"{spec}: width {nb} B in {time.perf_counter() - t0:.0f} s")
    rows: list[dict[str, Any]] = []
    common = {"tier": spec, "n_docs": data.n_docs, "n_tokens": len(data.tokens), "d": d,
              "K": len(centroids), "code_bytes": float(np.ceil(np.log2(len(centroids)))) / 8}  # fmt: skip

    def emit(row: dict[str, Any]) -> None:
        rows.append({**common, **row})
        log(json.dumps(row))
        out.write_text(json.dumps(rows, indent=1))

    # Uniform widths over every document; the coarsest two pick the candidates.
    full: dict[int, F32] = {}
    for nb, w in widths.items():
        path = _cache(data, cache_dir) / f"scores{nb}.npy"
        if not path.is_file():
            np.save(path, residual_scores(w.decoded, data.offsets, data))
        full[nb] = np.load(path)
        emit({"scheme": "uniform", "widths": [nb], "shares": [1.0], "mean_bytes": float(nb),
              "recall_at_10": recall(full[nb], exact)})  # fmt: skip
    low = sorted(widths)[:2]
    cand = candidates([exact.astype(np.float32), *(full[nb] for nb in low)], CAND_TOP, data.offsets)
    for nb, w in widths.items():  # the candidates hold every width's top 10: same recall
        emit({"check": "candidates", "widths": [nb], "mean_candidates":
              float(np.mean([len(c) for c in cand.docs])),
              "recall_at_10": cand_recall(w.decoded, cand, data, exact)})  # fmt: skip
    del full
    # Salience scores: higher = more bytes.
    resid_norm = np.linalg.norm(data.tokens - centroids[codes], axis=1)
    tq, tq_off = train_queries(data, cache_dir)
    t0 = time.perf_counter()
    wins_all, wins_top = win_counts(data.tokens, data.offsets, tq, tq_off)
    log(
        f"{spec}: win counts of {len(tq_off) - 1} training queries in {time.perf_counter() - t0:.0f} s"
    )
    tok_idf = idf[codes]
    scores: dict[str, npt.NDArray[np.floating]] = {
        "idf": tok_idf,
        "resid_norm": resid_norm,
        "wins_all": wins_all + 1e-3 * tok_idf,  # ties broken by IDF
        "wins_top": wins_top + 1e-3 * tok_idf,
    }
    if data.weights is not None:
        lengths = np.diff(data.offsets)
        scores["attention"] = data.weights * np.repeat(lengths, lengths)  # per-doc softmax undone
    ranks = {f"{name}/{mode}": (doc_rank(s, data.offsets) if mode == "doc" else global_rank(s))
             for name, s in scores.items() for mode in ("doc", "global")}  # fmt: skip
    ranks["random/global"] = np.random.default_rng(3).random(len(data.tokens))
    ranks["inverse_idf/doc"] = 1.0 - ranks["idf/doc"]  # the opposite bet, as a control

    # Coding error of every token at every width (the encoder's anisotropic objective):
    # what the error-driven allocations read; an encoder can compute it at build time.
    err = {nb: coding_error(data.tokens, w.decoded) for nb, w in widths.items()}
    ranks["err_lo/global"] = np.zeros(0)  # by the error at the split's narrowest width
    ranks["err_lo/doc"] = np.zeros(0)
    ranks["lagrange"] = np.zeros(0)  # argmin error + lambda bytes over the split's widths

    def assign(name: str, split: Split, budget: float) -> npt.NDArray[np.int64]:
        ws, shares = split
        if name == "lagrange":
            return lagrange(np.stack([err[nb] for nb in ws]), np.asarray(ws, np.float64), budget)
        if name.startswith("err_lo/"):
            e = err[min(ws)]
            rank = doc_rank(e, data.offsets) if name.endswith("/doc") else global_rank(e)
            return classes(rank, shares)
        return classes(ranks[name], shares)

    done: set[tuple[str, float, tuple[int, ...], tuple[float, ...]]] = set()

    def measure(name: str, split: Split, budget: float, stage: int) -> float:
        ws, shares = split
        key = (name, budget, ws, () if name == "lagrange" else tuple(round(x, 4) for x in shares))
        if key in done:
            return float("nan")
        done.add(key)
        which = assign(name, split, budget)
        r = cand_recall(mix([widths[nb] for nb in ws], which), cand, data, exact)
        got = np.bincount(which, minlength=len(ws)) / len(which)
        emit({"scheme": name, "stage": stage, "budget": budget, "widths": list(ws),
              "shares": [round(float(x), 4) for x in got],
              "mean_bytes": float(np.asarray(ws, np.float64)[which].mean()),
              "recall_at_10": r})  # fmt: skip
        return r

    for budget in budgets or BUDGETS[d]:
        screen = [pair(*p, budget) for p in SCREEN[d]]
        score_of = {name: float(np.nanmean([measure(name, s, budget, 1) for s in screen]))
                    for name in ranks}  # fmt: skip
        error_driven = ("lagrange", "err_lo/global", "err_lo/doc", "resid_norm/global",
                        "resid_norm/doc")  # fmt: skip
        salience = [n for n in score_of if n not in error_driven]
        best = ["lagrange", "err_lo/global", max(salience, key=score_of.__getitem__)]
        log(f"{spec}: budget {budget}: stage 1 means {score_of}; stage 2 with {best}")
        wide = [w for w in WIDTHS[d] if w > budget]
        narrow = [w for w in WIDTHS[d] if w < budget]
        more = [pair(hi, lo, budget) for hi in wide for lo in narrow]
        more += [t for hi, mid, lo in combinations(sorted(WIDTHS[d], reverse=True), 3)
                 if hi > budget and lo < budget and mid != lo
                 for top in (0.25,) if (t := triple(hi, mid, lo, top, budget)) is not None]  # fmt: skip
        for name in best:
            for s in more:
                measure(name, s, budget, 2)
        # The error-driven allocation with more classes: an upper bound of the approach.
        for ws in LAGRANGE_SETS[d]:
            measure("lagrange", (ws, (0.0,) * len(ws)), budget, 3)
    log(f"{spec}: done in {time.perf_counter() - t_start:.0f} s")
    return rows


def timing(
    spec: str, cache_dir: Path, ws: tuple[int, ...], budget: float, uniform_nb: int
) -> dict[str, Any]:
    """`time_rerank` of the error-driven (`lagrange`) split of widths `ws` at `budget` against
    the uniform width `uniform_nb`, from the cached codec and widths (run `run` first)."""
    data = load_tier(spec, cache_dir, 300)
    exact = exact_scores(data)
    centroids, codes, _idf = cached_codec(data, cache_dir)
    widths = {nb: cached_width(data, cache_dir, centroids, codes, nb) for nb in {*ws, uniform_nb}}
    err = np.stack([coding_error(data.tokens, widths[nb].decoded) for nb in ws])
    which = lagrange(err, np.asarray(ws, np.float64), budget)
    stack = [widths[nb] for nb in ws]
    row: dict[str, Any] = {"tier": spec, "widths": list(ws), "budget": budget,
                           "uniform": uniform_nb,
                           "mean_bytes": float(np.asarray(ws, np.float64)[which].mean())}  # fmt: skip
    with threadpool_limits(limits=1):
        row.update(time_rerank(data, exact, centroids, codes, widths[uniform_nb], (stack, which)))
    return row


def holdout(
    spec: str, cache_dir: Path, rows: list[dict[str, Any]], top: int = 8
) -> list[dict[str, Any]]:
    """The best settings of `run` checked for selection bias: per budget the `top` best rows
    (any scheme of stage 2 / 3) and the uniform width at the budget re-scored per query; a
    setting picked by its mean recall over the even queries is reported on the odd ones and
    vice versa (the run picks its best over all 300, an optimistic figure)."""
    data = load_tier(spec, cache_dir, 300)
    exact = exact_scores(data)
    centroids, codes, idf = cached_codec(data, cache_dir)
    need = {nb for r in rows for nb in r["widths"]}
    widths = {nb: cached_width(data, cache_dir, centroids, codes, nb) for nb in need}
    err = {nb: coding_error(data.tokens, w.decoded) for nb, w in widths.items()}
    resid_norm = np.linalg.norm(data.tokens - centroids[codes], axis=1)
    low = sorted(widths)[:2]
    full = [np.load(_cache(data, cache_dir) / f"scores{nb}.npy") for nb in low]
    cand = candidates([exact.astype(np.float32), *full], CAND_TOP, data.offsets)

    def per_query(decoded: F32) -> npt.NDArray[np.float64]:
        out = np.empty(data.n_queries)
        for j in range(data.n_queries):
            sc = decoded[cand.rows[j]] @ data.query(j).T
            score = np.maximum.reduceat(sc, cand.starts[j], axis=0).sum(axis=1)
            out[j] = metrics.recall_vs_exact(exact[j], cand.docs[j][top_k(score, K)[0]])
        return out

    def which_of(r: dict[str, Any]) -> npt.NDArray[np.int64]:
        ws = tuple(r["widths"])
        if r["scheme"] == "lagrange":
            return lagrange(
                np.stack([err[nb] for nb in ws]), np.asarray(ws, np.float64), r["budget"]
            )
        base = {"err_lo": err[min(ws)], "resid_norm": resid_norm, "idf": idf[codes]}
        name, mode = r["scheme"].split("/")
        if name not in base:
            raise ValueError(f"holdout does not rebuild the ranking {r['scheme']!r}")
        rank = doc_rank(base[name], data.offsets) if mode == "doc" else global_rank(base[name])
        return classes(rank, tuple(r["shares"]))

    out: list[dict[str, Any]] = []
    even = np.arange(data.n_queries) % 2 == 0
    for budget in sorted({r["budget"] for r in rows if "budget" in r}):
        pool = [r for r in rows if r.get("budget") == budget and r.get("stage", 1) >= 2
                and r["scheme"].split("/")[0] in ("lagrange", "err_lo", "resid_norm", "idf")]  # fmt: skip
        pool = sorted(pool, key=lambda r: -r["recall_at_10"])[:top]
        pq = [per_query(mix([widths[nb] for nb in r["widths"]], which_of(r))) for r in pool]
        uni = per_query(widths[int(budget)].decoded) if int(budget) in widths else None
        pick_e = int(np.argmax([p[even].mean() for p in pq]))
        pick_o = int(np.argmax([p[~even].mean() for p in pq]))
        row = {"tier": spec, "budget": budget, "candidates": len(pool),
               "picked_on_even": {"widths": pool[pick_e]["widths"], "scheme": pool[pick_e]["scheme"],
                                  "recall_odd": float(pq[pick_e][~even].mean())},
               "picked_on_odd": {"widths": pool[pick_o]["widths"], "scheme": pool[pick_o]["scheme"],
                                 "recall_even": float(pq[pick_o][even].mean())},
               "held_out_recall": float((pq[pick_e][~even].mean() + pq[pick_o][even].mean()) / 2),
               "best_in_run": float(pool[0]["recall_at_10"])}  # fmt: skip
        if uni is not None:
            row["uniform_recall"] = float(uni.mean())
        out.append(row)
        print(json.dumps(row))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tier", default="t2")
    ap.add_argument("--cache-dir", type=Path, default=Path("~/.cache/vecdb-bench"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--time-widths", default="", help="e.g. 64,32,16: time this split's rerank")
    ap.add_argument("--time-budget", type=float, default=36.0)
    ap.add_argument("--time-uniform", type=int, default=36)
    ap.add_argument("--holdout", action="store_true", help="check the best rows of --out")
    ap.add_argument("--budgets", default="", help="e.g. 32,36 (default: the tier's)")
    a = ap.parse_args(argv)
    out = a.out or Path(f"bench/mv_varwidth_{a.tier.replace(':', '-')}.json")
    if a.holdout:
        checked = holdout(a.tier, a.cache_dir, json.loads(out.read_text()))
        out.with_name(out.stem + "_holdout.json").write_text(json.dumps(checked, indent=1))
        return
    if a.time_widths:
        ws = tuple(int(x) for x in a.time_widths.split(","))
        row = timing(a.tier, a.cache_dir, ws, a.time_budget, a.time_uniform)
        print(json.dumps(row))
        if a.out:
            a.out.write_text(json.dumps(row, indent=1))
        return
    run(a.tier, a.cache_dir, out, tuple(float(x) for x in a.budgets.split(",") if x))


if __name__ == "__main__":
    main()
