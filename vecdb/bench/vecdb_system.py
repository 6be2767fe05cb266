"""vecdb itself as a benchmarked system, driven only through the public SDK.

Owns the adapter from the `System` contract to `vecdb.connect(path)`: one embedded database
per run in the work directory, one collection built by batched `upsert` plus `optimize`,
search-time parameters passed as `search(..., params=...)`. The index kind and its build
parameters come from the config, so any kind the engine offers can be measured; the sweep of
per-request parameters likewise. The `-grpc` variants serve the same database from a `vecdb
serve` child process and search it over gRPC. For the filtered benchmark
(`vecdb.bench.filtered`) the points carry integer payload columns (`set_payload_columns`,
optionally with a payload index per column) and a search takes a payload filter
(`set_filter`). Must not import the engine, index or storage.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.engine_features import optimize_and_wait
from vecdb.bench.memory import PROBE_QUERIES
from vecdb.bench.server_process import ServerProcess
from vecdb.bench.systems import Params, System
from vecdb.client.backpressure import Patience, upsert_patiently
from vecdb.config import MAX_BATCH, MAX_QUERIES

COLLECTION = "bench"
DATA_DIR = "vecdb-data"
WARM_VECTORS = 3000  # vectors of the warm-up build (enough for a SPANN index with splits)
UPSERT_BATCH_BYTES = 64 << 20  # vectors per upsert call: MAX_BATCH rows, at most 64 MiB
# Names the SDK may use for I/O counters on a search result's `stats` (a hook: the engine
# decides what it exposes; absent counters are reported as null).
READ_KEYS = ("posting_reads", "postings_read", "reads")
BYTES_KEYS = ("bytes_read", "read_bytes")


class _VecdbSystem(System):
    """A vecdb collection of one index kind; `index_kind` is set by subclasses."""

    is_ours = True
    measures_build_memory = True
    index_kind = "flat"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client: Any = None  # vecdb Client, embedded
        self.data_dir: Path | None = None  # the database directory
        self.params: Params = {}  # per-request search params of the current setting
        self.result_io = [0.0, 0.0]  # posting reads and bytes summed from results' stats
        self.payload_columns: dict[str, npt.NDArray[np.integer[Any]]] = {}  # row -> payload
        self.payload_index = False  # create_payload_index(key, "int") per column at build
        self.filter: dict[str, Any] | None = None  # payload filter of every search, or None

    def resolve_build_params(self, given: Params) -> Params:
        index_params = dict(given.get("index_params", {}))
        return {"index": given.get("index", self.index_kind), "index_params": index_params}

    def import_libraries(self) -> None:
        import vecdb

        # The embedded client imports the engine and compiles (or loads from numba's cache)
        # its kernels lazily. A tiny build and search of this system's index kind in an
        # in-memory database pull in every kernel of the build and search paths, so the
        # memory baseline holds that fixed code (about 10 MiB for SPANN's build kernels) in
        # both the build and the fresh-open process, and the rows compare index memory. The
        # search runs three times: one query (SPANN's one-kernel single-query path, which
        # needs a data directory on disk: its mmap reader), a pair of queries (the batch
        # kernels) and a batch of the memory probe's size at the threads set before this
        # call (a batch of >= 64 queries on > 1 thread takes SPANN's threaded path, whose
        # kernels, ~1.6 MiB, the pair misses).
        index = self.build_params.get("index", self.index_kind)
        n = WARM_VECTORS if index == "spann" else 2
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, self.dim)).astype(np.float32)
        batch = rng.standard_normal((PROBE_QUERIES, self.dim)).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp, vecdb.connect(tmp) as client:
            # the build's index_params too: a "bits" index has kernels of its own
            params = self.build_params.get("index_params") or {}
            client.create_collection(
                "warm", dim=self.dim, metric=self.metric, index=index, index_params=params
            )
            client.upsert("warm", ids=np.arange(n, dtype=np.int64), vectors=x)
            if index == "spann":
                client.optimize("warm", wait=True)
            for i in range(min(3, n)):  # one query at a time
                client.search("warm", x[i], k=1)
            client.search("warm", x[:2], k=1)
            client.search("warm", batch, k=1)

    def _connect(self, directory: Path) -> None:
        import vecdb

        self.data_dir = directory
        self.client = vecdb.connect(str(directory))

    def set_payload_columns(
        self, columns: Mapping[str, npt.NDArray[np.integer[Any]]], payload_index: bool = False
    ) -> None:
        """Before `build`: point i gets the payload {key: int(columns[key][i])}; with
        `payload_index`, each key also gets an "int" payload index, created before the upsert."""
        self.payload_columns = dict(columns)
        self.payload_index = payload_index

    def set_filter(self, flt: Mapping[str, Any] | None, mask: Any = None) -> None:
        """Pass `flt` as every search's payload filter (None: unfiltered); `mask` is unused."""
        self.filter = None if flt is None else dict(flt)

    def build(self, base: npt.NDArray[np.float32], workdir: Path) -> None:
        self._connect(workdir / DATA_DIR)
        self.client.create_collection(
            COLLECTION,
            dim=self.dim,
            metric=self.metric,
            index=self.build_params["index"],
            index_params=self.build_params["index_params"],
        )
        if self.payload_index:
            for key in self.payload_columns:
                self.client.create_payload_index(COLLECTION, key, "int")
        step, patience = upsert_batch_rows(self.dim), Patience()
        for lo in range(0, len(base), step):
            hi = min(lo + step, len(base))
            upsert_patiently(  # a build slower than the load fills the write buffer: wait
                self.client,
                COLLECTION,
                ids=np.arange(lo, hi, dtype=np.int64),
                vectors=base[lo:hi],
                payloads=self._payloads(lo, hi),
                patience=patience,
            )
        optimize_and_wait(self.client, COLLECTION)

    def _payloads(self, lo: int, hi: int) -> list[dict[str, int]] | None:
        if not self.payload_columns:
            return None
        cols = {key: col[lo:hi].tolist() for key, col in self.payload_columns.items()}
        return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]

    def set_params(self, params: Params) -> None:
        self.params = dict(params)

    def set_threads(self, n: int) -> None:
        try:
            import numba
        except ImportError:
            return
        limit = int(getattr(numba.config, "NUMBA_NUM_THREADS", n))
        numba.set_num_threads(max(1, min(n, limit)))

    def search(self, queries: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
        out = np.empty((len(queries), k), dtype=np.int64)
        for lo in range(0, len(queries), MAX_QUERIES):
            res = self.client.search(
                COLLECTION,
                queries[lo : lo + MAX_QUERIES],
                k=k,
                filter=self.filter,
                params=self.params or None,
            )
            ids = np.asarray(res.ids)
            if ids.dtype == object:  # str ids, padded with None (int ids: -1 already)
                ids = np.where(ids == None, -1, ids)  # noqa: E711
            out[lo : lo + len(ids)] = ids.astype(np.int64)
            stats = getattr(res, "stats", None)
            if isinstance(stats, Mapping):
                self.result_io[0] += _first(stats, READ_KEYS)
                self.result_io[1] += _first(stats, BYTES_KEYS)
        return out

    def measure_io(self, run: Callable[[], None], n_queries: int) -> tuple[float, float] | None:
        # Three hooks, first that answers wins: counters the SDK attaches to results, the
        # index's cumulative counters in `client.stats`, or its per-query `last_search`.
        self.result_io = [0.0, 0.0]
        before = _index_stats(self.client)
        run()
        if any(self.result_io):
            return self.result_io[0] / n_queries, self.result_io[1] / n_queries
        after = _index_stats(self.client)
        reads = _first(after, READ_KEYS) - _first(before, READ_KEYS)
        nbytes = _first(after, BYTES_KEYS) - _first(before, BYTES_KEYS)
        if not (np.isnan(reads) and np.isnan(nbytes)):
            return reads / n_queries, nbytes / n_queries
        last = after.get("last_search")
        if isinstance(last, Mapping):
            reads = _first(last, tuple(f"{k}_per_query" for k in READ_KEYS))
            nbytes = _first(last, tuple(f"{k}_per_query" for k in BYTES_KEYS))
            if not (np.isnan(reads) and np.isnan(nbytes)):
                return reads, nbytes
        return None

    def save(self, directory: Path) -> None:
        # The database directory (inside the build's work directory, which the runner passes
        # here) is the saved form; closing makes it durable and releases its lock.
        if self.client is not None:
            self.client.close()
            self.client = None

    def load(self, directory: Path) -> None:
        self._connect(directory / DATA_DIR)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def upsert_batch_rows(dim: int) -> int:
    """Rows per upsert call for `dim`-wide vectors: as many as a request may hold, but no
    more than UPSERT_BATCH_BYTES, so a wide set is not sent as 256 MiB requests."""
    return max(1, min(MAX_BATCH, UPSERT_BATCH_BYTES // (4 * max(1, dim))))


def _index_stats(client: Any) -> Mapping[str, Any]:
    try:
        stats = client.stats(COLLECTION).get("index", {})
    except Exception:  # a stats failure must not fail the benchmark
        return {}
    return stats if isinstance(stats, Mapping) else {}


def _first(stats: Mapping[str, Any], keys: tuple[str, ...]) -> float:
    for key in keys:
        if stats.get(key) is not None:
            return float(stats[key])
    return float("nan")


class VecdbFlat(_VecdbSystem):
    """vecdb's exact flat index (no search-time parameters)."""

    name = "vecdb-flat"
    index_kind = "flat"


class VecdbSpann(_VecdbSystem):
    """vecdb's SPANN index; sweeps how many postings a query may read."""

    name = "vecdb-spann"
    index_kind = "spann"
    default_sweep = {"max_postings": [4, 8, 16, 32, 64, 128]}


class _VecdbRemote(_VecdbSystem):
    """The same collection served by a `vecdb serve` child and reached over gRPC. The server
    is restarted to change its thread count; CPU time and RSS include the server process."""

    restarts_on_thread_change = True
    measures_build_memory = False  # the ingest benchmark measures the server's memory

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server: ServerProcess | None = None  # the running `vecdb serve`
        self.threads = 1  # thread count the server is (or will be) started with

    def _connect(self, directory: Path) -> None:
        import vecdb

        self.data_dir = directory
        self.server = ServerProcess(directory, self.threads)
        self.client = vecdb.connect(self.server.address)

    def _shutdown(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def import_libraries(self) -> None:
        import vecdb.client.remote  # noqa: F401

    def set_threads(self, n: int) -> None:
        if n == self.threads:
            return
        self.threads = n
        if self.server is not None and self.data_dir is not None:
            self._shutdown()
            self._connect(self.data_dir)

    def cpu_seconds(self) -> float:
        server = 0.0 if self.server is None else self.server.cpu_seconds()
        return time.process_time() + server

    def rss_baseline_kib(self) -> dict[str, int] | None:
        with tempfile.TemporaryDirectory(prefix="vecdb-bench-empty-") as empty:
            server = ServerProcess(Path(empty) / DATA_DIR, self.threads)
            try:
                time.sleep(0.5)  # let it settle after reporting "serving"
                return server.status_kib()
            finally:
                server.stop()

    def rss_kib(self) -> dict[str, int] | None:
        return None if self.server is None else self.server.status_kib()

    def save(self, directory: Path) -> None:
        self._shutdown()

    def close(self) -> None:
        self._shutdown()


class VecdbFlatRemote(_VecdbRemote):
    """vecdb's flat index over gRPC."""

    name = "vecdb-flat-grpc"
    index_kind = "flat"


class VecdbSpannRemote(_VecdbRemote):
    """vecdb's SPANN index over gRPC."""

    name = "vecdb-spann-grpc"
    index_kind = "spann"
    default_sweep = VecdbSpann.default_sweep
