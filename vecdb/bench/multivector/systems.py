"""The systems of the multi-vector benchmark, behind one small interface.

Owns the adapters: `exact-numba` (the harness's exact MaxSim kernel over every document),
`maxsim-cpu` (the compiled exact MaxSim on PyPI), `token-knn-hnsw` (faiss HNSW over all tokens,
k' neighbours per query token, exact MaxSim rerank of their documents: the Vespa / Qdrant
approach), `fast-plaid` (PLAID on torch, on the CPU), the paper's settings as explicit
baselines (`codes-only`: one k-means code per token, scored through the query x centroid
table; `centroid-id-hamming`: Hamming similarity between the bits of centroid ids), and
`mvindex` / `mvindex-exact` (vecdb's MultiVectorIndex, when the package has it). Each reports
its bytes per token by tier and, per query, the documents it considered and fully scored.
Must not compute metrics or time anything.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.multivector import metrics, scoring
from vecdb.bench.multivector.embed import MVData
from vecdb.errors import FailedPrecondition, InvalidArgument
from vecdb.index.multivector.params import MVSearchParams

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Params = dict[str, Any]
KMEANS_SEED = 1234
KMEANS_ITERS = 10
KMEANS_MAX_SAMPLE = 65_536


@dataclass
class Hits:
    """One query's answer: ids (k,) best first, the documents considered (None when every
    document is), how many were scored exactly, and the system's own counters."""

    ids: I64
    candidates: I64 | None
    fully_scored: int
    stats: dict[str, Any] = field(default_factory=dict)


class MVSystem:
    """Base class: `build` once per build setting, then `search` per query and sweep setting."""

    name = "?"
    is_ours = False

    def build(self, data: MVData, params: Params) -> None:
        self.data = data

    def search(self, q: F32, k: int, params: Params) -> Hits:
        raise NotImplementedError

    def bytes_per_token(self, params: Params) -> dict[str, float]:
        """Bytes per token of every tier a search with `params` reads."""
        return {"fp32": 4.0 * self.data.dim}

    def close(self) -> None:
        """Release whatever the build holds (its temporary directory, if it made one)."""
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()


class ExactNumba(MVSystem):
    name = "exact-numba"
    is_ours = True

    def search(self, q: F32, k: int, params: Params) -> Hits:
        s = scoring.maxsim(q, self.data.tokens, self.data.offsets)
        return Hits(scoring.top_k(s, k)[0], None, self.data.n_docs)


class MaxsimCpu(MVSystem):
    name = "maxsim-cpu"

    def build(self, data: MVData, params: Params) -> None:
        try:
            import maxsim_cpu
        except ImportError as exc:
            raise FailedPrecondition("maxsim-cpu is not installed: pip install maxsim-cpu") from exc
        super().build(data, params)
        self._fn = maxsim_cpu.maxsim_scores_variable
        self._docs = [data.doc(i) for i in range(data.n_docs)]

    def search(self, q: F32, k: int, params: Params) -> Hits:
        s = np.asarray(self._fn(np.ascontiguousarray(q), self._docs), dtype=np.float32)
        return Hits(scoring.top_k(s, k)[0], None, self.data.n_docs)


class TokenKnnHnsw(MVSystem):
    """faiss HNSW (inner product) over every token; candidates = the documents of each query
    token's k' nearest tokens; exact MaxSim over the candidates."""

    name = "token-knn-hnsw"

    def build(self, data: MVData, params: Params) -> None:
        import faiss

        super().build(data, params)
        m = int(params.get("M", 32))
        self.index = faiss.IndexHNSWFlat(data.dim, m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = int(params.get("ef_construction", 100))
        self.index.add(data.tokens)
        self.token_doc = np.repeat(np.arange(data.n_docs, dtype=np.int64), np.diff(data.offsets))
        graph = len(faiss.serialize_index(self.index)) - data.tokens.nbytes
        self._graph_bytes = graph / max(1, len(data.tokens))

    def search(self, q: F32, k: int, params: Params) -> Hits:
        kp = int(params.get("k_prime", 64))
        self.index.hnsw.efSearch = max(kp, int(params.get("ef_search", 0)))
        _d, labels = self.index.search(np.ascontiguousarray(q), kp)
        cand = np.unique(self.token_doc[labels[labels >= 0]])
        s = scoring.maxsim(q, self.data.tokens, self.data.offsets, cand)
        return Hits(scoring.top_k(s, k, cand)[0], cand, len(cand))

    def bytes_per_token(self, params: Params) -> dict[str, float]:
        return {"fp32": 4.0 * self.data.dim, "hnsw_graph": self._graph_bytes}


class FastPlaid(MVSystem):
    """fast-plaid (PyPI; PLAID's pipeline on torch, the `plaid` extra) on the CPU: build
    params `nbits` (residual bits a dimension, 2 or 4; its default 4) and `kmeans_niters`;
    sweep params `n_ivf_probe` (cells a query token probes) and `n_full_scores` (documents
    whose residuals are decompressed and scored). Its search does not say how many
    documents it scored, so that column stays empty. Bytes per token: its index files,
    split into codes, residuals and the IVF (inverted lists over the tokens)."""

    name = "fast-plaid"

    def build(self, data: MVData, params: Params) -> None:
        try:
            import torch
            from fast_plaid import search as fps
        except ImportError as exc:
            raise FailedPrecondition(
                "fast-plaid is not installed: pip install -e '.[plaid]' (it brings torch)"
            ) from exc
        if data.dim % 8:
            # fast-plaid 1.7.0 packs residual bits 8 dimensions at a time: at d = 50 its
            # build panics in a reshape (its Rust code), whatever nbits
            raise InvalidArgument(f"fast-plaid needs a dimension divisible by 8, not {data.dim}")
        super().build(data, params)
        self._torch = torch
        self._tmp = tempfile.TemporaryDirectory(prefix="vecdb-fastplaid-")
        self.index = fps.FastPlaid(index=self._tmp.name, device="cpu")
        docs = [torch.from_numpy(np.ascontiguousarray(data.doc(i))) for i in range(data.n_docs)]
        self.index.create(
            documents_embeddings=docs,
            nbits=int(params.get("nbits", 4)),
            kmeans_niters=int(params.get("kmeans_niters", 4)),
            seed=KMEANS_SEED,
        )
        sizes: dict[str, float] = {}
        for f in Path(self._tmp.name).iterdir():
            tier = next((t for t in ("codes", "residuals", "ivf") if t in f.name), "other")
            sizes[tier] = sizes.get(tier, 0.0) + f.stat().st_size / len(data.tokens)
        self._bytes = sizes
        self._cells = len(np.load(Path(self._tmp.name) / "centroids.npy", mmap_mode="r"))

    def search(self, q: F32, k: int, params: Params) -> Hits:
        query = self._torch.from_numpy(np.ascontiguousarray(q)).unsqueeze(0)
        res = self.index.search(
            query,
            top_k=k,
            n_ivf_probe=min(int(params.get("n_ivf_probe", 8)), self._cells),  # (it fails past)
            n_full_scores=int(params.get("n_full_scores", 4096)),
            show_progress=False,
        )
        ids = np.full(k, -1, dtype=np.int64)
        got = [int(doc) for doc, _score in res[0]][:k]
        ids[: len(got)] = got
        return Hits(ids, None, -1)

    def bytes_per_token(self, params: Params) -> dict[str, float]:
        return {t: self._bytes[t] for t in ("codes", "residuals", "ivf") if t in self._bytes}


_KMEANS: dict[tuple[str, int], tuple[F32, I64]] = {}


def kmeans_codes(data: MVData, k: int) -> tuple[F32, I64]:
    """(centroids (K, d), code of every token) from seeded spherical k-means on a sample;
    shared by the code baselines of one run."""
    import faiss

    key = (str(data.meta.get("checksum")), k)
    if key not in _KMEANS:
        rng = np.random.default_rng(KMEANS_SEED)
        n = len(data.tokens)
        sample = data.tokens[np.sort(rng.choice(n, size=min(n, KMEANS_MAX_SAMPLE), replace=False))]
        km = faiss.Kmeans(data.dim, k, niter=KMEANS_ITERS, spherical=True, seed=KMEANS_SEED)
        km.train(np.ascontiguousarray(sample))
        centroids = np.asarray(km.centroids, dtype=np.float32)
        index = faiss.IndexFlatIP(data.dim)
        index.add(centroids)
        _d, codes = index.search(data.tokens, 1)
        _KMEANS[key] = (centroids, codes[:, 0].astype(np.int64))
    return _KMEANS[key]


class CodesOnly(MVSystem):
    """The paper's float mode: every token stored as its centroid id only (1 byte at K=256),
    every document scored through the query-token x centroid table."""

    name = "codes-only"

    def build(self, data: MVData, params: Params) -> None:
        super().build(data, params)
        self.k = int(params.get("K", 256))
        self.centroids, codes = kmeans_codes(data, self.k)
        self.codes = codes.astype(np.uint16 if self.k > 256 else np.uint8)
        self.packed, self.bits = scoring.pack(codes, self.k)

    def search(self, q: F32, k: int, params: Params) -> Hits:
        s = scoring.code_scores(q, self.centroids, self.packed, self.bits, self.data.offsets)
        return Hits(scoring.top_k(s, k)[0], None, 0)

    def bytes_per_token(self, params: Params) -> dict[str, float]:
        return {"code": math.ceil(math.log2(self.k)) / 8}


class CentroidIdHamming(CodesOnly):
    """The paper's binary mode: the ceil(log2 K)-bit centroid id of each token as a bit
    string; a query token takes the id of its nearest centroid; score = sum over query tokens
    of max over document tokens of 1 / (1 + Hamming)."""

    name = "centroid-id-hamming"

    def search(self, q: F32, k: int, params: Params) -> Hits:
        qids = np.argmax(q @ self.centroids.T, axis=1).astype(np.int64)
        s = scoring.id_hamming_scores(qids, self.codes, self.data.offsets)
        return Hits(scoring.top_k(s, k)[0], None, 0)


def _multivector_index() -> Any:
    try:
        from vecdb.index.multivector import MultiVectorIndex
    except ImportError as exc:
        raise FailedPrecondition(
            "vecdb.index.multivector.MultiVectorIndex is not in this build of vecdb"
        ) from exc
    return MultiVectorIndex


class MVIndex(MVSystem):
    """vecdb's MultiVectorIndex: build params go to the constructor, sweep params to search.
    `weights: true` in the build params passes the tier's salience (T2's attention)."""

    name = "mvindex"
    is_ours = True

    def build(self, data: MVData, params: Params) -> None:
        super().build(data, params)
        cls = _multivector_index()
        p = dict(params)
        use_weights = bool(p.pop("weights", False))
        self._tmp = tempfile.TemporaryDirectory(prefix="vecdb-mvbench-")
        self.index = cls(data.dim, directory=Path(self._tmp.name), params=p, metric="cosine")
        ids = np.arange(data.n_docs, dtype=np.int64)
        weights = data.weights if use_weights else None
        self.index.build(ids, data.tokens, data.offsets, weights=weights)
        self._stats = dict(self.index.stats())

    def search(self, q: F32, k: int, params: Params) -> Hits:
        ids, _scores, stats = self.index.search(q, k, params=params or None)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)[:k]
        st = {str(key): v for key, v in dict(stats or {}).items()}
        cand = st.pop("candidate_ids", None)
        fully = st.get("docs_scored", st.get("docs_fully_scored", -1))
        return Hits(ids, None if cand is None else np.asarray(cand, np.int64), int(fully), st)

    def bytes_per_token(self, params: Params) -> dict[str, float]:
        """The tiers a search with `params` reads: codes and the IVF postings always (postings
        as bytes over encoded tokens), sign bits when the Hamming prefilter is on, then the
        rerank tier: residuals, sign bits, nothing more for "codes", the int8 / float16 tier,
        or the raw float32 store for "exact" (unset: the stored tier if any, else residuals,
        else exact); the raw store as well when `refine` rescores the rerank's best from it (the
        default: 16 documents at k = 10; `refine` 0 turns it off)."""
        per = self._stats.get("bytes_per_token", {})
        tokens = max(1, int(self._stats.get("encoded_tokens", 0) or 1))
        out = {
            "codes": float(per.get("codes", 0.0)),
            "postings": float(self._stats.get("postings_bytes", 0)) / tokens,
        }
        if int(params.get("hamming_keep", 0)) > 0:
            out["signs"] = float(per.get("signs", 0.0))
        default = "residual" if per.get("residuals") else "exact"
        rerank = params.get("rerank") or ("tier" if per.get("tier") else default)
        if rerank == "residual":
            out["residuals"] = float(per.get("residuals", 0.0))
        elif rerank == "signs":
            out["signs"] = float(per.get("signs", 0.0))
        elif rerank == "codes":
            pass  # the centroid interaction over the codes is the ranking
        elif rerank == "exact":
            out["raw"] = float(per.get("raw", 4.0 * self.data.dim))
        else:
            out["tier"] = float(per.get("tier", 0.0))
        if MVSearchParams.parse(params).refined(metrics.K, rerank):
            out["raw"] = float(per.get("raw", 4.0 * self.data.dim))  # the refine's reads
        return out

    def pruning_share(self, params: Params) -> float:
        """Share of query x document token pairs left by pruning and pooling: kept query
        tokens (query_keep) x encoded over raw document tokens."""
        tokens = max(1, int(self._stats.get("tokens", 0) or 1))
        kept = float(self._stats.get("encoded_tokens", tokens)) / tokens
        return float(params.get("query_keep", 1.0)) * kept

    def index_stats(self) -> dict[str, Any]:
        return self._stats


class MVIndexExact(MVIndex):
    """MultiVectorIndex's own exact MaxSim (the product's exact path)."""

    name = "mvindex-exact"

    def bytes_per_token(self, params: Params) -> dict[str, float]:
        return {"raw": 4.0 * self.data.dim}

    def search(self, q: F32, k: int, params: Params) -> Hits:
        ids, _scores = self.index.exact(q, k)
        return Hits(np.asarray(ids, dtype=np.int64).reshape(-1)[:k], None, self.data.n_docs)


SYSTEMS: dict[str, type[MVSystem]] = {
    c.name: c
    for c in (
        ExactNumba,
        MaxsimCpu,
        TokenKnnHnsw,
        FastPlaid,
        CodesOnly,
        CentroidIdHamming,
        MVIndex,
        MVIndexExact,
    )
}


def make_system(name: str) -> MVSystem:
    base = name.split("@", 1)[0]
    if base not in SYSTEMS:
        raise InvalidArgument(f"unknown multivector system {name!r}; known: {sorted(SYSTEMS)}")
    return SYSTEMS[base]()
