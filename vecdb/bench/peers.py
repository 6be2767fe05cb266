"""The peer systems vecdb is measured against: faiss (exact, IVF-Flat, HNSW, IVF-PQ with a
flat refine) and hnswlib, each with its search-time sweep.

Owns only the adapters: how each library is built, tuned, threaded, saved and reloaded. The
build parameters follow research/peers_glove50.md (faiss HNSW M=32 efC=200, hnswlib M=16
efC=200, IVF nlist ~ 4 sqrt(n) as a power of two) so our numbers can be checked against it.
Cosine data arrives unit-norm and is searched by inner product. For the filtered benchmark
(`vecdb.bench.filtered`) each adapter also takes `set_filter(filter, mask)`: faiss restricts
its search to the mask's rows with an `IDSelectorBitmap` passed in per-call search parameters,
hnswlib with a filter function. Must not time anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.systems import Params, System, power_of_two_near

MIN_POINTS_PER_CENTROID = 39  # faiss warns below this many training points per centroid


def _faiss() -> Any:
    import faiss

    return faiss


class _FaissSystem(System):
    """Shared plumbing of the faiss adapters: metric mapping, threads, save/load, search."""

    index_file = "index.faiss"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.index: Any = None  # the faiss index, set by build or load
        self.selector: Any = None  # faiss IDSelectorBitmap of the current filter, or None
        self.bitmap: npt.NDArray[np.uint8] | None = None  # the bits the selector points into

    @property
    def faiss_metric(self) -> int:
        faiss = _faiss()
        return int(faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT)

    def import_libraries(self) -> None:
        _faiss()

    def set_threads(self, n: int) -> None:
        _faiss().omp_set_num_threads(n)

    def set_filter(self, flt: Any, mask: npt.NDArray[np.bool_] | None) -> None:
        """Search only the rows where `mask` is true (None: all rows); `flt` is unused."""
        if mask is None:
            self.selector = self.bitmap = None
            return
        faiss = _faiss()
        # faiss reads bit i of the bitmap as bitmap[i >> 3] >> (i & 7) & 1, and keeps only
        # a pointer: the array must live as long as the selector.
        self.bitmap = np.packbits(np.asarray(mask, dtype=bool), bitorder="little")
        self.selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(self.bitmap))

    def search_parameters(self) -> Any:
        """Per-call parameters carrying the selector (and the knob the sweep set on the index,
        which per-call parameters would otherwise reset)."""
        return _faiss().SearchParameters(sel=self.selector)

    def search(self, queries: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
        if self.selector is None:
            _dist, ids = self.index.search(queries, k)
        else:
            _dist, ids = self.index.search(queries, k, params=self.search_parameters())
        return np.asarray(ids, dtype=np.int64)

    def save(self, directory: Path) -> None:
        _faiss().write_index(self.index, str(directory / self.index_file))

    def load(self, directory: Path) -> None:
        self.index = _faiss().read_index(str(directory / self.index_file))

    def close(self) -> None:
        self.index = None
        self.selector = self.bitmap = None


class ExactFlat(_FaissSystem):
    """Brute force with faiss IndexFlat (BLAS for batches): the 100%-recall reference."""

    name = "exact"

    def build(self, base: npt.NDArray[np.float32], workdir: Path) -> None:
        self.index = _faiss().IndexFlat(self.dim, self.faiss_metric)
        self.index.add(base)

    def set_params(self, params: Params) -> None:
        pass


def default_nlist(n: int) -> int:
    """~4 sqrt(n) rounded to a power of two, but at least 39 training points per list."""
    cap = max(1, n // MIN_POINTS_PER_CENTROID)
    return min(power_of_two_near(4 * n**0.5), 1 << (cap.bit_length() - 1))


class FaissIVFFlat(_FaissSystem):
    """faiss IndexIVFFlat trained with faiss defaults; sweeps nprobe."""

    name = "faiss-ivf"
    default_sweep = {"nprobe": [1, 2, 4, 8, 16, 32, 64, 128, 256]}

    def resolve_build_params(self, given: Params) -> Params:
        return {"nlist": default_nlist(self.n), **given}

    def build(self, base: npt.NDArray[np.float32], workdir: Path) -> None:
        faiss = _faiss()
        nlist = int(self.build_params["nlist"])
        quantizer = faiss.IndexFlat(self.dim, self.faiss_metric)
        self.index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, self.faiss_metric)
        self.index.train(base)
        self.index.add(base)

    def set_params(self, params: Params) -> None:
        self.index.nprobe = int(params.get("nprobe", 1))

    def search_parameters(self) -> Any:
        return _faiss().SearchParametersIVF(sel=self.selector, nprobe=int(self.index.nprobe))


class FaissHNSW(_FaissSystem):
    """faiss IndexHNSWFlat (M=32, efConstruction=200 by default); sweeps efSearch."""

    name = "faiss-hnsw"
    default_sweep = {"efSearch": [10, 20, 40, 80, 160, 320, 640]}

    def resolve_build_params(self, given: Params) -> Params:
        return {"M": 32, "efConstruction": 200, **given}

    def build(self, base: npt.NDArray[np.float32], workdir: Path) -> None:
        faiss = _faiss()
        self.index = faiss.IndexHNSWFlat(self.dim, int(self.build_params["M"]), self.faiss_metric)
        self.index.hnsw.efConstruction = int(self.build_params["efConstruction"])
        self.index.add(base)

    def set_params(self, params: Params) -> None:
        self.index.hnsw.efSearch = int(params.get("efSearch", 16))

    def search_parameters(self) -> Any:
        ef = int(self.index.hnsw.efSearch)
        return _faiss().SearchParametersHNSW(sel=self.selector, efSearch=ef)


def default_pq_m(d: int) -> int:
    """Sub-quantizers: the largest divisor of d that is at most d/2 (2 dims each if d is even)."""
    return max([m for m in range(1, max(1, d // 2) + 1) if d % m == 0])


class FaissIVFPQRefine(_FaissSystem):
    """faiss IndexIVFPQ (by residual) wrapped in IndexRefineFlat; sweeps nprobe x k_factor."""

    name = "faiss-ivfpq"
    default_sweep = {"k_factor": [4, 16], "nprobe": [2, 4, 8, 16, 32, 64, 128]}

    def resolve_build_params(self, given: Params) -> Params:
        bits = 8
        while bits > 1 and self.n < MIN_POINTS_PER_CENTROID * (1 << bits):
            bits -= 1
        out = {"nlist": default_nlist(self.n), "m": default_pq_m(self.dim), "nbits": bits}
        return {**out, **given}

    def build(self, base: npt.NDArray[np.float32], workdir: Path) -> None:
        faiss = _faiss()
        p = self.build_params
        quantizer = faiss.IndexFlat(self.dim, self.faiss_metric)
        ivfpq = faiss.IndexIVFPQ(
            quantizer, self.dim, int(p["nlist"]), int(p["m"]), int(p["nbits"]), self.faiss_metric
        )
        self.index = faiss.IndexRefineFlat(ivfpq)
        self.index.train(base)
        self.index.add(base)

    def set_params(self, params: Params) -> None:
        self.index.k_factor = float(params.get("k_factor", 1))
        _faiss().extract_index_ivf(self.index).nprobe = int(params.get("nprobe", 1))

    def search_parameters(self) -> Any:
        faiss = _faiss()
        nprobe = int(faiss.extract_index_ivf(self.index).nprobe)
        ivf = faiss.SearchParametersIVF(sel=self.selector, nprobe=nprobe)
        # The refine step only re-ranks what the filtered IVF-PQ returned.
        return faiss.IndexRefineSearchParameters(
            k_factor=float(self.index.k_factor), base_index_params=ivf
        )


class Hnswlib(System):
    """hnswlib (M=16, ef_construction=200 by default); sweeps ef."""

    name = "hnswlib"
    default_sweep = {"ef": [10, 20, 40, 80, 160, 320, 640]}
    index_file = "index.hnsw"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.index: Any = None  # hnswlib.Index
        self.threads = 1  # passed to every add/query call
        self.filter: Any = None  # hnswlib filter function (row id -> bool), or None

    def resolve_build_params(self, given: Params) -> Params:
        return {"M": 16, "ef_construction": 200, "random_seed": 100, **given}

    def import_libraries(self) -> None:
        import hnswlib  # noqa: F401

    def _new(self) -> Any:
        import hnswlib

        return hnswlib.Index(space="l2" if self.metric == "l2" else "ip", dim=self.dim)

    def build(self, base: npt.NDArray[np.float32], workdir: Path) -> None:
        p = self.build_params
        self.index = self._new()
        self.index.init_index(
            max_elements=len(base),
            M=int(p["M"]),
            ef_construction=int(p["ef_construction"]),
            random_seed=int(p["random_seed"]),
        )
        self.index.add_items(base, np.arange(len(base)), num_threads=self.threads)

    def set_params(self, params: Params) -> None:
        self.index.set_ef(int(params.get("ef", 10)))

    def set_threads(self, n: int) -> None:
        self.threads = n
        if self.index is not None:
            self.index.set_num_threads(n)

    def set_filter(self, flt: Any, mask: npt.NDArray[np.bool_] | None) -> None:
        """Search only the rows where `mask` is true (None: all rows); `flt` is unused."""
        # The cheapest callable Python offers: a C-level index into a list of bools (hnswlib
        # calls it for every candidate, holding the GIL).
        self.filter = None if mask is None else np.asarray(mask, dtype=bool).tolist().__getitem__

    def search(self, queries: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
        labels, _dist = self.index.knn_query(
            queries, k=k, num_threads=self.threads, filter=self.filter
        )
        return np.asarray(labels, dtype=np.int64)

    def save(self, directory: Path) -> None:
        self.index.save_index(str(directory / self.index_file))

    def load(self, directory: Path) -> None:
        self.index = self._new()
        self.index.load_index(str(directory / self.index_file), max_elements=self.n)

    def close(self) -> None:
        self.index = None
        self.filter = None
