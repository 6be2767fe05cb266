"""Build and search parameters of the multi-vector index, with their named bounds.

This module owns the names, defaults and bounds (`DEFAULT_`, `MIN_`, `MAX_`) of every
multi-vector parameter and their validation (an `InvalidArgument` naming the parameter, with
`field` "index_params.<name>" or "params.<name>"); `PARAMS.md` explains each trade-off. Search
widths left at 0 (or `centroid_threshold` left unset) follow `plaid_defaults` by k. No algorithm
code.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from vecdb.errors import InvalidArgument

# --- build parameters -------------------------------------------------------------------------
DEFAULT_K, MIN_K, MAX_K = 0, 0, 65_536  # 0 = auto: 2^floor(log2(16 sqrt(T))) in [256, 65536]
MIN_AUTO_K, MAX_AUTO_K = 256, 65_536
RESIDUAL_BITS = (0, 1, 2)
DEFAULT_RESIDUAL_BITS = 2
DEFAULT_RESIDUAL_BYTES, MIN_RESIDUAL_BYTES, MAX_RESIDUAL_BYTES = 0, 0, 4096  # 0 = ceil(d b / 8)
RESIDUAL_CODECS = ("pq", "rq")  # product codes | residual quantiser (`additive`)
DEFAULT_RESIDUAL_CODEC = "pq"
DEFAULT_SIGN_BITS = False  # d/8 bytes a token in memory, read only by hamming_keep / 'signs'
RERANK_TIERS = ("none", "int8", "float16")
DEFAULT_RERANK_TIER = "none"
DEFAULT_DOC_PRUNE, MIN_DOC_PRUNE, MAX_DOC_PRUNE = 1.0, 0.05, 1.0  # share of tokens kept
DEFAULT_POOL, MIN_POOL, MAX_POOL = 0.0, 0.0, 1.0  # cosine to merge tokens; 0 = off
MIN_POOL_ON = 0.5  # a pooling threshold below this merges unrelated tokens
DEFAULT_TRAIN_ITERS, MIN_TRAIN_ITERS, MAX_TRAIN_ITERS = 4, 1, 50
DEFAULT_TRAIN_SAMPLE, MIN_TRAIN_SAMPLE, MAX_TRAIN_SAMPLE = 0, 0, 10_000_000  # 0 = kmeans default
DEFAULT_MIN_TRAIN_TOKENS, MIN_MIN_TRAIN_TOKENS, MAX_MIN_TRAIN_TOKENS = 4096, 16, 100_000_000
DEFAULT_DRIFT, MIN_DRIFT, MAX_DRIFT = 1.5, 1.05, 100.0  # residual growth that triggers retraining
DEFAULT_SEED, MIN_SEED, MAX_SEED = 0, 0, 2**31 - 1

# --- search parameters ------------------------------------------------------------------------
DEFAULT_NPROBE, MIN_NPROBE, MAX_NPROBE = 0, 0, 256  # cells per query token; 0 = by k
DEFAULT_NDOCS, MIN_NDOCS, MAX_NDOCS = 0, 0, 1_000_000  # kept after interaction; 0 = by k
DEFAULT_PROBE_KEEP, MIN_PROBE_KEEP, MAX_PROBE_KEEP = 0, 0, 1_000_000  # by probe score; 0 = auto
# probe_keep left at 0: this many when nprobe >= PROBE_MIN_NPROBE, else no cut. The probe score
# needs many cells per query token to rank well: cut to 256 on t2 it kept recall@10 0.875 /
# 0.897 / 0.912 / 0.917 scoring from 2 / 4 / 8 / 16 cells (bench/RESULTS.md, "Issue 11: a probe
# score from 16 cells as the default").
PROBE_KEEP_AUTO, PROBE_MIN_NPROBE = 256, 8
MIN_THRESHOLD, MAX_THRESHOLD = -1e6, 1e6  # centroid pruning tau; None = by k
DEFAULT_HAMMING_KEEP, MIN_HAMMING_KEEP, MAX_HAMMING_KEEP = 0, 0, 1_000_000  # 0 = off
RERANKS = ("residual", "int8", "float16", "exact", "codes", "signs")
COMPARISON_RERANKS = ("codes", "signs")  # HPC-ColPali's codes-only and Vespa's sign ranking
DEFAULT_QUERY_KEEP, MIN_QUERY_KEEP, MAX_QUERY_KEEP = 1.0, 0.05, 1.0
MIN_REFINE, MAX_REFINE = 0, 100_000  # the rerank's best scored exactly; 0 = off, unset = by k
# refine left unset: max(REFINE_MIN, ceil(REFINE_BY_K x k)). What the residual codes get wrong
# is the order near the k-th document: at k = 10 the exact rescoring of the residual rerank's
# best 12 / 16 / 24 took recall@10 vs exact on t2 from 0.920 to 0.969 / 0.985 / 0.986 (the
# exact rerank of all 96 survivors: 0.986), t1-ctx 0.915 to 0.969 / 0.990 / 0.995, for
# +0.1-0.35 ms a query (bench/RESULTS.md, "Issue 11: an exact rescoring of the rerank's best").
REFINE_MIN, REFINE_BY_K = 16, 1.6


def plaid_defaults(k: int) -> tuple[int, float, int]:
    """(nprobe, centroid_threshold, ndocs) by k: PLAID's searcher table, except that k <= 10
    probes 16 cells per query token, cuts the candidates to PROBE_KEEP_AUTO by WARP's
    postings-only score (`probe_keep`) and keeps 384 (96 fully scored), which the benchmark
    chose: on t2 recall@10 0.9190 vs 0.9173 for PLAID-like 2 cells / 512 (t1-ctx 0.9133 vs
    0.9037), at 0.81-0.88x its time at 1 thread in one process, 0.92-0.98x in the bench's
    alternated pass (t1-ctx 0.88x, t1-static 0.60x; "Issue 11: a probe score from 16 cells as the
    default" in bench/RESULTS.md). PLAID itself: 1 / 256. Up to k = 100, 4 cells and
    max(1024, 16 k) (PLAID: 2 / 1,024, which fully scores 256, the limit at k = 50-100):
    recall@k vs exact with the default refine on t2 at k = 20 / 50 / 100 0.967 / 0.910 /
    0.826 -> 0.990 / 0.967 / 0.934, t1-ctx 0.952 / 0.899 / 0.816 -> 0.986 / 0.970 / 0.934,
    at -0.2 to +0.5 ms a query ("Issue 11: wider defaults from k = 11 to 100" in
    bench/RESULTS.md)."""
    if k <= 10:
        return 16, 0.45, 384
    if k <= 100:
        return 4, 0.45, max(1024, 16 * k)
    return 4, 0.4, max(4 * k, 4096)


def auto_k(tokens: int) -> int:
    """Codebook size for `tokens` tokens: 2^floor(log2(16 sqrt(T))) clamped to [256, 65536]."""
    raw = 16.0 * math.sqrt(max(1, tokens))
    return int(min(MAX_AUTO_K, max(MIN_AUTO_K, 2 ** math.floor(math.log2(raw)))))


def _number(prefix: str, name: str, value: Any, lo: float, hi: float, integer: bool) -> Any:
    field = f"{prefix}.{name}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(f"{field} must be a number, got {value!r}", field=field)
    if integer and not float(value).is_integer():
        raise InvalidArgument(f"{field} must be an integer, got {value!r}", field=field)
    if not (lo <= float(value) <= hi):  # also rejects NaN
        raise InvalidArgument(f"{field} must be in [{lo}, {hi}], got {value!r}", field=field)
    return int(float(value)) if integer else float(value)


def _choice(prefix: str, name: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    field = f"{prefix}.{name}"
    if isinstance(value, bool) != isinstance(allowed[0], bool) or value not in allowed:
        raise InvalidArgument(f"{field} must be one of {allowed}, got {value!r}", field=field)
    return value


def _unknown(prefix: str, given: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(set(given) - known)
    if extra:
        raise InvalidArgument(
            f"unknown {prefix} parameter(s) for a multivector collection: {', '.join(extra)}",
            field=f"{prefix}.{extra[0]}",
        )


@dataclass(frozen=True)
class MVBuildParams:
    """Fixed when the collection is created (stored in the index manifest)."""

    K: int  # codebook size; 0 = auto from the token count at training
    residual_bits: int  # bits per dimension of the residual codes (0 = none)
    residual_bytes: int  # bytes per residual row when more than ceil(d b / 8) (0 = that)
    residual_codec: str  # pq (product codes) | rq (residual quantiser, full-d codewords)
    sign_bits: bool  # keep d sign bits per token for the Hamming prefilter
    rerank_tier: str  # high-fidelity doc-major tier on disk: none | int8 | float16
    doc_prune: float  # share of each document's tokens kept by salience (1.0 = off)
    pool: float  # merge a document's tokens whose cosine reaches this (0 = off)
    train_iters: int  # k-means iterations of the codebook
    train_sample: int  # k-means training rows (0 = the k-means module's default)
    min_train_tokens: int  # the worker trains the first codebook once this many tokens exist
    drift: float  # retrain when new tokens' mean residual grows past this x the training one
    seed: int  # k-means seed

    @classmethod
    def parse(cls, given: Mapping[str, Any] | None, prefix: str = "index_params") -> MVBuildParams:
        g = dict(given or {})
        _unknown(prefix, g, set(cls.__dataclass_fields__))
        n = _number
        pool = n(prefix, "pool", g.get("pool", DEFAULT_POOL), MIN_POOL, MAX_POOL, False)
        if 0.0 < pool < MIN_POOL_ON:
            raise InvalidArgument(
                f"{prefix}.pool must be 0 (off) or in [{MIN_POOL_ON}, 1], got {pool!r}",
                field=f"{prefix}.pool",
            )
        k = n(prefix, "K", g.get("K", DEFAULT_K), MIN_K, MAX_K, True)
        if k == 1:
            raise InvalidArgument(f"{prefix}.K must be 0 (auto) or at least 2", field=f"{prefix}.K")
        return cls(
            K=k,
            residual_bits=_choice(
                prefix, "residual_bits", g.get("residual_bits", DEFAULT_RESIDUAL_BITS), RESIDUAL_BITS
            ),
            residual_bytes=n(
                prefix, "residual_bytes", g.get("residual_bytes", DEFAULT_RESIDUAL_BYTES),
                MIN_RESIDUAL_BYTES, MAX_RESIDUAL_BYTES, True,
            ),
            residual_codec=_choice(
                prefix, "residual_codec", g.get("residual_codec", DEFAULT_RESIDUAL_CODEC),
                RESIDUAL_CODECS,
            ),
            sign_bits=_choice(prefix, "sign_bits", g.get("sign_bits", DEFAULT_SIGN_BITS), (True, False)),
            rerank_tier=_choice(
                prefix, "rerank_tier", g.get("rerank_tier", DEFAULT_RERANK_TIER), RERANK_TIERS
            ),
            doc_prune=n(
                prefix, "doc_prune", g.get("doc_prune", DEFAULT_DOC_PRUNE), MIN_DOC_PRUNE, MAX_DOC_PRUNE, False
            ),
            pool=pool,
            train_iters=n(
                prefix, "train_iters", g.get("train_iters", DEFAULT_TRAIN_ITERS), MIN_TRAIN_ITERS, MAX_TRAIN_ITERS, True
            ),
            train_sample=n(
                prefix, "train_sample", g.get("train_sample", DEFAULT_TRAIN_SAMPLE), MIN_TRAIN_SAMPLE, MAX_TRAIN_SAMPLE, True
            ),
            min_train_tokens=n(
                prefix, "min_train_tokens", g.get("min_train_tokens", DEFAULT_MIN_TRAIN_TOKENS),
                MIN_MIN_TRAIN_TOKENS, MAX_MIN_TRAIN_TOKENS, True,
            ),
            drift=n(prefix, "drift", g.get("drift", DEFAULT_DRIFT), MIN_DRIFT, MAX_DRIFT, False),
            seed=n(prefix, "seed", g.get("seed", DEFAULT_SEED), MIN_SEED, MAX_SEED, True),
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MVSearchParams:
    """Per request; widths resolved against k by `resolve`."""

    nprobe: int  # cells probed per query token (0 = by k)
    centroid_threshold: float | None  # PLAID tau: codes below it skip the first pass
    ndocs: int  # candidates kept after the first interaction pass (0 = by k)
    probe_keep: int  # candidates kept by the probe (postings-only) score (0 = auto)
    hamming_keep: int  # candidates kept by the sign-bit prefilter (0 = off)
    rerank: str | None  # residual | int8 | float16 | exact (None = best stored tier)
    query_keep: float  # share of query tokens kept, by centroid IDF (1.0 = all)
    refine: int | None = None  # the rerank's best max(k, refine) scored exactly (0 = off)

    @classmethod
    def parse(cls, given: Mapping[str, Any] | None, prefix: str = "params") -> MVSearchParams:
        g = dict(given or {})
        _unknown(prefix, g, set(cls.__dataclass_fields__))
        n = _number
        tau = g.get("centroid_threshold")
        rerank = g.get("rerank")
        return cls(
            nprobe=n(prefix, "nprobe", g.get("nprobe", DEFAULT_NPROBE), MIN_NPROBE, MAX_NPROBE, True),
            centroid_threshold=None if tau is None else n(
                prefix, "centroid_threshold", tau, MIN_THRESHOLD, MAX_THRESHOLD, False
            ),
            ndocs=n(prefix, "ndocs", g.get("ndocs", DEFAULT_NDOCS), MIN_NDOCS, MAX_NDOCS, True),
            probe_keep=n(
                prefix, "probe_keep", g.get("probe_keep", DEFAULT_PROBE_KEEP),
                MIN_PROBE_KEEP, MAX_PROBE_KEEP, True,
            ),
            hamming_keep=n(
                prefix, "hamming_keep", g.get("hamming_keep", DEFAULT_HAMMING_KEEP),
                MIN_HAMMING_KEEP, MAX_HAMMING_KEEP, True,
            ),
            rerank=None if rerank is None else _choice(prefix, "rerank", rerank, RERANKS),
            query_keep=n(
                prefix, "query_keep", g.get("query_keep", DEFAULT_QUERY_KEEP),
                MIN_QUERY_KEEP, MAX_QUERY_KEEP, False,
            ),
            refine=None if g.get("refine") is None else n(
                prefix, "refine", g["refine"], MIN_REFINE, MAX_REFINE, True
            ),
        )  # fmt: skip

    def resolve(self, k: int) -> tuple[int, float, int, int]:
        """(nprobe, centroid_threshold, ndocs, probe_keep) for top-k, filling the by-k
        defaults; probe_keep 0 = no cut, else at least the second pass' max(k, ndocs / 4)."""
        nprobe, tau, ndocs = plaid_defaults(k)
        nprobe = self.nprobe or nprobe
        ndocs = max(k, self.ndocs or ndocs)
        keep = self.probe_keep or (PROBE_KEEP_AUTO if nprobe >= PROBE_MIN_NPROBE else 0)
        return (
            nprobe,
            tau if self.centroid_threshold is None else self.centroid_threshold,
            ndocs,
            max(k, ndocs // 4, keep) if keep else 0,
        )

    def refined(self, k: int, rerank: str) -> int:
        """Documents the exact rescoring takes from the best of `rerank` for top-k (0 =
        none): `refine` when given (at least k), else max(REFINE_MIN, ceil(REFINE_BY_K k)),
        except after the rankings kept for comparison ("codes", "signs": unset, they stay
        what they are) and after an exact rerank (nothing to refine)."""
        if rerank == "exact":
            return 0
        if self.refine is None:
            if rerank in COMPARISON_RERANKS:
                return 0
            return max(REFINE_MIN, math.ceil(REFINE_BY_K * k))
        return max(k, self.refine) if self.refine else 0
