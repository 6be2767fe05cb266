"""The filtered-search benchmark's data: a synthetic payload and exact filtered ground truth.

Owns what `vecdb bench --filter-selectivity` searches for. Every base point gets a seeded
payload with one int field per selectivity, `{"s2": r2, "s10": r10, ...}`, where field `sX`
holds a seeded permutation of the row numbers modulo X (uniform over 0..X-1, exactly balanced,
and not correlated with row order or with the vectors); selectivity 1/X is the single equality
filter `{"sX": 0}`, matched by ceil(n / X) points. The ground truth of each selectivity is the
exact top-k among the matching points only (numpy brute force over the subset, in query chunks),
cached beside the dataset's own under `<dataset cache>/filtered-<checksum>/`. Must not time or
run any index (see `vecdb.bench.filtered_run`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.datasets import Dataset
from vecdb.errors import InvalidArgument

FORMAT_VERSION = 1  # bump when the payload or the ground truth changes
DEFAULT_PAYLOAD_SEED = 1  # seeds the permutations behind the payload fields
GT_K = 10  # filtered ground truth depth (the benchmark reports recall@1 and @10)
MAX_MODULUS = 1_000_000  # selectivity >= 1e-6
GT_CHUNK_BYTES = 64 << 20  # query-chunk x subset distance matrix per step
OPTION = "--filter-selectivity"  # named in errors about selectivities

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FilterCase:
    """One selectivity: its payload field and filter, the matching rows and their ground truth."""

    selectivity: float  # as asked, e.g. 0.01
    field: str  # payload field, e.g. "s100"
    modulus: int  # X: the field is uniform over 0..X-1
    filter: dict[str, Any]  # {"s100": 0}
    mask: npt.NDArray[np.bool_]  # (n,) True where the point matches
    gt_ids: I64  # (nq, GT_K) exact neighbours among the matching points, nearest first
    gt_dist: F32  # (nq, GT_K) their distances (vecdb's convention), ascending

    @property
    def n_matching(self) -> int:
        return int(self.mask.sum())


def parse_selectivities(spec: str) -> list[float]:
    """ "0.5,0.1,0.01" -> [0.5, 0.1, 0.01]. Each must be 1/X for a whole X (one equality filter
    on a field uniform over 0..X-1), in (0, 1]; duplicates are an error."""
    out: list[float] = []
    for part in (p.strip() for p in spec.split(",")):
        try:
            s = float(part)
        except ValueError:
            raise InvalidArgument(f"{OPTION}: {part!r} is not a number") from None
        if not 1.0 / MAX_MODULUS <= s <= 1.0:
            raise InvalidArgument(f"{OPTION}: {part} is outside [{1.0 / MAX_MODULUS:g}, 1]")
        x = round(1.0 / s)
        if abs(x * s - 1.0) > 1e-6:
            raise InvalidArgument(
                f"{OPTION}: {part} is not 1/X for a whole number X (e.g. 0.5, 0.1, 0.01)",
            )
        if any(round(1.0 / o) == x for o in out):
            raise InvalidArgument(f"{OPTION}: {part} is given twice")
        out.append(s)
    return out


def modulus_of(selectivity: float) -> int:
    return round(1.0 / selectivity)


def field_of(selectivity: float) -> str:
    return f"s{modulus_of(selectivity)}"


def payload_columns(n: int, selectivities: Sequence[float], seed: int) -> dict[str, I64]:
    """Field -> (n,) int64 values: a seeded permutation of 0..n-1 modulo X per field, each
    field from its own stream (seed, X), so adding a selectivity does not change the others."""
    out: dict[str, I64] = {}
    for s in selectivities:
        x = modulus_of(s)
        perm = np.random.default_rng([seed, x]).permutation(n)
        out[field_of(s)] = (perm % x).astype(np.int64)
    return out


def filtered_topk(base: F32, queries: F32, metric: str, rows: I64, k: int) -> tuple[I64, F32]:
    """Exact top-k of each query among `base[rows]`, as (base row ids, distances), padded with
    -1 / +inf when fewer than k rows match; ties broken by the smaller row id."""
    nq = len(queries)
    ids = np.full((nq, k), -1, dtype=np.int64)
    dist = np.full((nq, k), np.inf, dtype=np.float32)
    kk = min(k, len(rows))
    if kk == 0 or nq == 0:
        return ids, dist
    sub = np.ascontiguousarray(base[rows], dtype=np.float32)
    sub_norm2 = np.einsum("ij,ij->i", sub, sub) if metric == "l2" else None
    step = max(1, GT_CHUNK_BYTES // (4 * len(sub)))
    for lo in range(0, nq, step):
        q = queries[lo : lo + step]
        dots = q @ sub.T  # (chunk, m) float32, BLAS
        if sub_norm2 is not None:
            q_norm2 = np.einsum("ij,ij->i", q, q)
            d = sub_norm2[None, :] - 2.0 * dots + q_norm2[:, None]
        elif metric == "ip":
            d = -dots
        else:
            d = 1.0 - dots
        part = np.argpartition(d, kk - 1, axis=1)[:, :kk] if kk < len(rows) else None
        cand = np.broadcast_to(np.arange(len(rows)), d.shape) if part is None else part
        cand_d = np.take_along_axis(d, cand, axis=1)
        cand_ids = rows[cand]
        order = np.lexsort((cand_ids, cand_d), axis=1)[:, :kk]
        ids[lo : lo + len(q), :kk] = np.take_along_axis(cand_ids, order, axis=1)
        dist[lo : lo + len(q), :kk] = np.take_along_axis(cand_d, order, axis=1)
    return ids, dist


def filter_cases(
    ds: Dataset, selectivities: Sequence[float], seed: int = DEFAULT_PAYLOAD_SEED
) -> tuple[dict[str, I64], list[FilterCase]]:
    """The payload columns and one case per selectivity, ground truth from the cache when the
    dataset, the queries, the seed and the selectivities are the same."""
    n = len(ds.base)
    columns = payload_columns(n, selectivities, seed)
    for s in selectivities:
        if -(-n // modulus_of(s)) < GT_K:  # ceil(n / X) points match
            raise InvalidArgument(f"{OPTION}: {s:g} of {n:,} points matches fewer than {GT_K}")
    key = {
        "format_version": FORMAT_VERSION,
        "dataset": ds.meta.get("checksum") or ds.name,
        "queries": hashlib.sha256(np.ascontiguousarray(ds.queries).tobytes()).hexdigest(),
        "metric": ds.metric,
        "n": n,
        "seed": seed,
        "k": GT_K,
    }
    cases = []
    for s in selectivities:
        field = field_of(s)
        mask = columns[field] == 0
        gt_ids, gt_dist = _cached_gt(ds, {**key, "field": field}, mask)
        cases.append(FilterCase(s, field, modulus_of(s), {field: 0}, mask, gt_ids, gt_dist))
    return columns, cases


def _cached_gt(ds: Dataset, key: dict[str, Any], mask: npt.NDArray[np.bool_]) -> tuple[I64, F32]:
    checksum = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    directory = Path(ds.directory) / f"filtered-{checksum[:16]}"
    paths = [directory / f"{key['field']}-{name}.npy" for name in ("gt_ids", "gt_dist")]
    meta = directory / f"{key['field']}.json"
    if meta.is_file() and json.loads(meta.read_text()).get("checksum") == checksum:
        return np.load(paths[0]), np.load(paths[1])
    rows = np.flatnonzero(mask).astype(np.int64)
    gt_ids, gt_dist = filtered_topk(ds.base, ds.queries, ds.metric, rows, GT_K)
    directory.mkdir(parents=True, exist_ok=True)
    arrays: list[npt.NDArray[Any]] = [gt_ids, gt_dist]
    for path, arr in zip(paths, arrays, strict=True):
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        tmp.replace(path)
    tmp_meta = meta.with_suffix(".tmp")
    tmp_meta.write_text(json.dumps({"checksum": checksum, "inputs": key}, indent=1))
    tmp_meta.replace(meta)
    return gt_ids, gt_dist
