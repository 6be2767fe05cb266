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

from vecdb.bench.multivector import embed, metrics
from vecdb.bench.multivector.embed import MVData, load_tier
from vecdb.bench.multivector.scoring import maxsim, top_k
from vecdb.bench.multivector.truth import exact_scores
from vecdb.index.multivector import codec as mvcodec
from vecdb.index.multivector.params import MVBuildParams
from vecdb.kernels.bitpack import book_slots, row_bytes

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
STAGE2_RANKS = 3  # rankings carried to every split
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
    spec: str, cache_dir: Path, out: Path, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Uniform widths, then per budget every salience ranking on a few splits (stage 1), then
    the best rankings on every split (stage 2)."""
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
        full[nb] = residual_scores(w.decoded, data.offsets, data)
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

    def measure(name: str, split: Split, budget: float, stage: int) -> float:
        ws, shares = split
        which = classes(ranks[name], shares)
        r = cand_recall(mix([widths[nb] for nb in ws], which), cand, data, exact)
        emit({"scheme": name, "stage": stage, "budget": budget, "widths": list(ws),
              "shares": [round(s, 4) for s in shares],
              "mean_bytes": float(np.asarray(ws, np.float64)[which].mean()),
              "recall_at_10": r})  # fmt: skip
        return r

    for budget in BUDGETS[d]:
        screen = [pair(*p, budget) for p in SCREEN[d]]
        score_of = {name: float(np.mean([measure(name, s, budget, 1) for s in screen]))
                    for name in ranks}  # fmt: skip
        best = sorted(score_of, key=score_of.__getitem__, reverse=True)[:STAGE2_RANKS]
        log(f"{spec}: budget {budget}: stage 1 means {score_of}; stage 2 with {best}")
        wide = [w for w in WIDTHS[d] if w > budget]
        narrow = [w for w in WIDTHS[d] if w < budget]
        more = [pair(hi, lo, budget) for hi in wide for lo in narrow]
        more += [t for hi, mid, lo in combinations(sorted(WIDTHS[d], reverse=True), 3)
                 if hi > budget and lo < budget and mid != lo
                 for top in (0.1, 0.25) if (t := triple(hi, mid, lo, top, budget)) is not None]  # fmt: skip
        for name in best:
            for s in more:
                if s not in screen:
                    measure(name, s, budget, 2)
    log(f"{spec}: done in {time.perf_counter() - t_start:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tier", default="t2")
    ap.add_argument("--cache-dir", type=Path, default=Path("~/.cache/vecdb-bench"))
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    out = a.out or Path(f"bench/mv_varwidth_{a.tier.replace(':', '-')}.json")
    run(a.tier, a.cache_dir, out)


if __name__ == "__main__":
    main()
