"""The multi-vector codec: a k-means codebook plus residual, sign and rerank-tier encodings.

This module owns training a codebook on a sample of tokens (with `vecdb.kernels.kmeans`, the
project's one k-means) and encoding tokens with it: a centroid code per token (packed at
ceil(log2 K) bits by the caller), residual codes of `residual_bits` per dimension, d sign bits,
and an optional int8 (per-dimension scales) or float16 rerank tier. Residuals are product
quantised a byte at a time (`vecdb.kernels.bitpack` byte codebooks: 8 / b dimensions, 256
codewords; with `residual_bytes` above ceil(d b / 8), the dimensions split evenly over the bytes): the codewords start as the grid of per-dimension quantile buckets (what ColBERTv2
stores, per dimension here) and are refined by Lloyd iterations on a sample; tokens are then
coded anisotropically (the error along the token's own direction weighs ANISO_ETA times, since
that component moves the MaxSim of the query tokens that match it). Measured on the benchmark
tiers, this takes the residual rerank from recall@10 0.84-0.88 to 0.92-0.93 at the same bytes
(bench/RESULTS.md). With `residual_codec="rq"` the same bytes hold a residual quantiser's
codes instead (`additive`: full-d codewords, beam-search coding, the same lookup-table score).
It also keeps the centroid IDF (log((T + 1) / (size + 1)), the salience
proxy of pruning) and the training residual, which the drift check compares new tokens
against. A codec is immutable once trained; a retrain makes a new one with the next
generation number. Pure numpy plus the bitpack kernels; no files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import numpy.typing as npt

from vecdb.index.multivector.additive import additive_lut, encode_additive, train_additive
from vecdb.index.multivector.params import MVBuildParams, auto_k
from vecdb.kernels.bitpack import (
    book_slots,
    build_lut,
    encode_books,
    grid_books,
    row_bytes,
    spread,
)
from vecdb.kernels.hamming import pack_signs
from vecdb.kernels.kmeans import (
    Groups,
    Tick,
    assign,
    assign_grouped,
    calibrate_probe,
    group_centroids,
    kmeans,
    kmeans_two_level,
)
from vecdb.kernels.maxsim import to_bfloat16

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

ENCODE_CHUNK = 65_536  # tokens encoded per step (bounds the temporaries)
QUANTILE_SAMPLE = 200_000  # residual rows used to place the bucket boundaries
PQ_SAMPLE = 65_536  # residual rows the byte codebooks are refined on
PQ_ITERS = 8  # Lloyd iterations of the byte codebooks
ANISO_ETA = 4.0  # weight of the residual error along the token's direction (1 = plain)
ANISO_PASSES = 2  # coordinate-descent passes of the anisotropic coding
# Above FLAT_MAX_K centroids the codebook is trained in two levels (`kmeans_two_level`, then
# train_iters refining Lloyd iterations) and tokens find their centroid among the members of
# their nearest groups of centroids (`assign_grouped`; ASSIGN_PROBE of them, or more where
# the training's `calibrate_probe` found more needed): both cost about
# sqrt(K) distances a token instead of K, so a build grows with T^1.25 instead of T^1.5
# (K grows as sqrt(T)). At K <= FLAT_MAX_K (the benchmark tiers) nothing changed.
FLAT_MAX_K = 4096
ASSIGN_PROBE = 16


def _groups_of(centroids: F32) -> Groups | None:
    """The groups `assign_grouped` looks in above FLAT_MAX_K centroids; None at or below it
    (then every token is assigned exactly)."""
    return group_centroids(centroids) if len(centroids) > FLAT_MAX_K else None


@dataclass(frozen=True)
class Encoded:
    """Tokens under a codec; rows follow the input order."""

    codes: I64  # (n,) centroid of each token
    residuals: U8  # (n, ceil(d b / 8)) packed residual codes ((n, 0) when b = 0)
    signs: U8  # (n, ceil(d / 8)) sign bits ((n, 0) when off)
    tier: npt.NDArray[np.generic]  # (n, d) int8 / float16 rerank rows ((n, 0) when none)
    sq_residual: float  # mean squared distance of the tokens to their centroids


@dataclass(frozen=True)
class Codec:
    """A trained codebook and the encodings built on it."""

    generation: int  # 1 for the first training, +1 per retrain
    centroids: F32  # (K, d)
    residual_bits: int  # b: 0, 1 or 2
    books: F32  # (P, 256, 8 / b) residual byte codebooks, P = residual_width ((0, 256, 1): b = 0)
    sign_bits: bool  # sign bits are encoded
    tier: str  # "none" | "int8" | "float16"
    scales: F32  # (d,) int8 tier scale per dimension (ones otherwise)
    idf: F32  # (K,) log((T + 1) / (cell size + 1)) at training
    sq_residual: float  # mean squared residual of the training tokens
    additive: bool = False  # books are (P, 256, d) residual-quantiser codebooks (`additive`)
    assign_probe: int = ASSIGN_PROBE  # above FLAT_MAX_K: groups `assign` probes (calibrated)
    # the centroids as bfloat16, what a search scores queries against (`centroid_scores`):
    # half the bytes of a table read once per query (K = 8,192 x 128: 0.70 -> 0.37 ms with
    # the caches cold); derived, never stored
    scoring: npt.NDArray[np.uint16] = field(init=False, repr=False, compare=False)
    # above FLAT_MAX_K, the centroids grouped for `assign`: handed over by the training, or
    # derived from the centroids when first asked for (two threads asking at once compute
    # the same value); never stored
    grouping: Groups | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scoring", to_bfloat16(self.centroids))

    def groups(self) -> Groups | None:
        """The centroids' groups for `assign` (None at K <= FLAT_MAX_K: exact assignment)."""
        if self.grouping is None:
            object.__setattr__(self, "grouping", _groups_of(self.centroids))
        return self.grouping

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def bytes_per_token(self, code_bits: int) -> dict[str, float]:
        """Bytes per token of each encoded tier."""
        d = self.dim
        return {
            "codes": code_bits / 8.0,
            "residuals": float(self.books.shape[0]) if self.residual_bits else 0.0,
            "signs": float(row_bytes(d, 1)) if self.sign_bits else 0.0,
            "tier": {"none": 0.0, "int8": float(d), "float16": 2.0 * d}[self.tier],
        }

    def lut(self, q: F32, width: int = 0) -> F32:
        """Byte lookup table (P, 256, m) of the residual score of queries q (m, d); with
        `width` > m, (P, 256, width) and zero past m (the rerank kernel's padded lanes)."""
        if self.additive:
            return additive_lut(q, self.books, width)
        return build_lut(q, self.books, width)

    def assign(self, tokens: F32, tick: Tick | None = None) -> I64:
        """Nearest centroid of each token (above FLAT_MAX_K, among its `assign_probe` nearest
        groups of centroids; then `tick(rows done, n)` after each chunk of rows)."""
        groups = self.groups()  # (both assignments work a chunk of rows at a time)
        if groups is None:
            return assign(tokens, self.centroids)[0]
        return assign_grouped(tokens, self.centroids, groups, self.assign_probe, tick)[0]

    def encode(self, tokens: F32, codes: I64 | None = None) -> Encoded:
        """Encode tokens (n, d) float32 (codes reused when already assigned)."""
        n, d = tokens.shape
        codes = self.assign(tokens) if codes is None else codes
        b = self.residual_bits
        res = np.empty((n, self.books.shape[0] if b else 0), np.uint8)
        signs = np.empty((n, row_bytes(d, 1) if self.sign_bits else 0), np.uint8)
        tier_dtype = {"int8": np.int8, "float16": np.float16}.get(self.tier, np.int8)
        tier = np.empty((n, d if self.tier != "none" else 0), tier_dtype)
        sq = 0.0
        for lo in range(0, n, ENCODE_CHUNK):
            x = tokens[lo : lo + ENCODE_CHUNK]
            r = x - self.centroids[codes[lo : lo + ENCODE_CHUNK]]
            sq += float(np.einsum("ij,ij->", r, r, dtype=np.float64))
            if b:
                res[lo : lo + len(x)] = encode_residuals(r, x, self.books, self.additive)
            if self.sign_bits:
                signs[lo : lo + len(x)] = pack_signs(x).view(np.uint8)[:, : signs.shape[1]]
            if self.tier == "int8":
                tier[lo : lo + len(x)] = np.clip(np.rint(x / self.scales), -127, 127)
            elif self.tier == "float16":
                tier[lo : lo + len(x)] = x
        return Encoded(codes, res, signs, tier, sq / max(1, n))


def encode_residuals(resid: F32, tokens: F32, books: F32, additive: bool = False) -> U8:
    """Byte codes of residuals under `books` (product codebooks, or residual-quantiser ones
    when `additive`), anisotropic along each token's direction."""
    norms = np.sqrt(np.einsum("ij,ij->i", tokens, tokens))[:, None]
    unit = (tokens / np.maximum(norms, 1e-12)).astype(np.float32)
    if additive:
        return encode_additive(resid, unit, books, ANISO_ETA)
    return encode_books(resid, books, unit, ANISO_ETA, ANISO_PASSES)


def residual_width(d: int, b: int, nbytes: int) -> int:
    """Bytes of a residual row: ceil(d b / 8), or `nbytes` when more (at most d)."""
    return max(row_bytes(d, b), min(nbytes, d))


def train_books(resid: F32, b: int, seed: int, nbytes: int = 0) -> F32:
    """Byte codebooks of `b` bits per dimension for residual rows, `residual_width` bytes a
    row: at the natural width, the per-dimension quantile grid, refined by PQ_ITERS Lloyd
    iterations on at most PQ_SAMPLE rows (with more bytes, the dimensions split evenly per
    byte, `book_slots`, and the codewords start as 256 sampled rows)."""
    d = resid.shape[1]
    per = 8 // b
    nb = residual_width(d, b, nbytes)
    rng = np.random.default_rng(seed)
    if nb == row_bytes(d, b):
        levels = 1 << b
        values = np.quantile(resid, (np.arange(levels) + 0.5) / levels, axis=0).T
        books = grid_books(values.astype(np.float32), b)
    x = resid if len(resid) <= PQ_SAMPLE else resid[rng.choice(len(resid), PQ_SAMPLE, False)]
    xp = spread(x, book_slots(d, nb, per))
    if nb != row_bytes(d, b):
        pick = rng.choice(len(xp), 256, replace=len(xp) < 256)
        books = np.ascontiguousarray(xp[pick].reshape(256, nb, per).transpose(1, 0, 2))
    nv = books.shape[1]
    for _ in range(PQ_ITERS):
        codes = encode_books(x, books)
        for p in range(nb):
            count = np.bincount(codes[:, p], minlength=nv)
            used = count > 0
            for s in range(per):
                total = np.bincount(codes[:, p], weights=xp[:, p * per + s], minlength=nv)
                books[p, used, s] = (total[used] / count[used]).astype(np.float32)
    return books


def train(
    tokens: F32,
    params: MVBuildParams,
    generation: int,
    unit: bool,
    total: int | None = None,
    peak: F32 | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Codec, I64]:
    """Train a codec on `tokens` (n, d) float32; returns it and the code of every token.
    `unit` (the collection's metric is cosine) makes the centroids unit vectors, as PLAID's.
    `total` > n: the tokens are a sample of that many (the auto K and the IDF follow it);
    `peak`: the largest |value| per dimension of all the tokens the codec will encode (the
    int8 tier's scales; default: these tokens'). `progress(phase, done, total)` is called
    as the k-means' steps end ("train") and as the tokens are assigned to the centroids
    ("assign"); an exception it raises abandons the training."""
    n, d = tokens.shape
    if n == 0:
        raise ValueError("cannot train a codebook on zero tokens")
    total = max(n, total or n)
    tick = None if progress is None else partial(progress, "train")
    k = min(params.K or auto_k(total), n)
    if k > FLAT_MAX_K:
        centroids = kmeans_two_level(
            tokens,
            k,
            iters=params.train_iters,
            sample=params.train_sample or None,
            seed=params.seed,
            refine=params.train_iters,
            tick=tick,
        )
    else:
        centroids = kmeans(
            tokens,
            k,
            iters=params.train_iters,
            sample=params.train_sample or None,
            seed=params.seed,
            assign_all=False,
            tick=tick,
        ).centroids
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if unit:  # cosine: spherical centroids
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        centroids = (centroids / np.maximum(norms, 1e-12)).astype(np.float32)
    groups = _groups_of(centroids)
    probe = (  # as many groups as these tokens need
        ASSIGN_PROBE
        if groups is None
        else calibrate_probe(tokens, centroids, groups, ASSIGN_PROBE, seed=params.seed)
    )
    bare = Codec(generation, centroids, 0, np.zeros((0, 256, 1), np.float32), False, "none",
                 np.ones(d, np.float32), np.zeros(len(centroids), np.float32), 0.0,
                 assign_probe=probe)  # fmt: skip
    object.__setattr__(bare, "grouping", groups)
    codes = bare.assign(tokens, None if progress is None else partial(progress, "assign"))
    rng = np.random.default_rng(params.seed)
    pick = (
        rng.choice(n, size=min(n, QUANTILE_SAMPLE), replace=False) if n > QUANTILE_SAMPLE else None
    )
    sample = tokens if pick is None else tokens[np.sort(pick)]
    scodes = codes if pick is None else codes[np.sort(pick)]
    resid = sample - centroids[scodes]
    if progress is not None:  # (the residual codebooks: seconds, at 100% of "assign" before)
        progress("residuals", 0, 1)
    b = params.residual_bits
    additive = bool(b) and params.residual_codec == "rq"
    if additive:
        width = residual_width(d, b, params.residual_bytes)
        books = train_additive(resid, width, PQ_ITERS, PQ_SAMPLE, params.seed)
    elif b:
        books = train_books(resid, b, params.seed, params.residual_bytes)
    else:
        books = np.zeros((0, 256, 1), np.float32)
    scales = np.ones(d, np.float32)
    if params.rerank_tier == "int8":
        peak = np.abs(tokens).max(axis=0) if peak is None else peak
        scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    sizes = np.bincount(codes, minlength=len(centroids)) * (total / n)  # (a sample: scaled)
    idf = np.log((total + 1.0) / (sizes + 1.0)).astype(np.float32)
    sq = float(np.einsum("ij,ij->", resid, resid, dtype=np.float64)) / max(1, len(resid))
    codec = Codec(
        generation=generation,
        centroids=centroids,
        residual_bits=b,
        books=np.ascontiguousarray(books),
        sign_bits=params.sign_bits,
        tier=params.rerank_tier,
        scales=scales,
        idf=idf,
        sq_residual=sq,
        additive=additive,
        assign_probe=probe,
    )
    object.__setattr__(codec, "grouping", groups)  # (same centroids: not regrouped)
    if progress is not None:
        progress("residuals", 1, 1)
    return codec, codes
