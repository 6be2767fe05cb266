"""The contract every benchmarked system implements, and the registry of system names.

Owns: `System` (build, set_params, set_threads, search, save, load, close, measure_io),
the names accepted by `--systems` (with group aliases such as `vecdb` and `faiss`), and the
expansion of a sweep (a dict of lists is a grid, a list of dicts is taken as is), and
variants a config defines on top of a registered system (`"base": "vecdb-spann"`). Concrete
systems live in `vecdb.bench.peers` (faiss, hnswlib) and `vecdb.bench.vecdb_system` (vecdb
through its public SDK); they are imported lazily so a missing library only fails its own row.
"""

from __future__ import annotations

import itertools
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import InvalidArgument

Params = dict[str, Any]

# Name -> (module, class). Order here is the order of rows in RESULTS.md: ours first.
REGISTRY: dict[str, tuple[str, str]] = {
    "vecdb-flat": ("vecdb.bench.vecdb_system", "VecdbFlat"),
    "vecdb-spann": ("vecdb.bench.vecdb_system", "VecdbSpann"),
    "exact": ("vecdb.bench.peers", "ExactFlat"),
    "faiss-ivf": ("vecdb.bench.peers", "FaissIVFFlat"),
    "faiss-hnsw": ("vecdb.bench.peers", "FaissHNSW"),
    "faiss-ivfpq": ("vecdb.bench.peers", "FaissIVFPQRefine"),
    "hnswlib": ("vecdb.bench.peers", "Hnswlib"),
    "vecdb-flat-grpc": ("vecdb.bench.vecdb_system", "VecdbFlatRemote"),
    "vecdb-spann-grpc": ("vecdb.bench.vecdb_system", "VecdbSpannRemote"),
}
ALIASES: dict[str, list[str]] = {
    "vecdb": ["vecdb-flat", "vecdb-spann"],
    "faiss": ["faiss-ivf", "faiss-hnsw", "faiss-ivfpq"],
    "peers": ["exact", "faiss-ivf", "faiss-hnsw", "faiss-ivfpq", "hnswlib"],
    "vecdb-grpc": ["vecdb-flat-grpc", "vecdb-spann-grpc"],
    "all": [name for name in REGISTRY if not name.endswith("-grpc")],
}
DEFAULT_SYSTEMS = "all"


class System(ABC):
    """One index under test. Lifecycle: build (or load) -> [set_params -> search]* -> save ->
    close. `search` takes a (nq, d) float32 batch and returns (nq, k) int64 row ids of the base,
    padded with -1. Subclasses declare `name`, `is_ours` and `default_sweep`."""

    name: str = ""  # registry name, e.g. "faiss-ivf"
    is_ours: bool = False  # True for vecdb's own systems (ratios are ours / peer)
    restarts_on_thread_change = False  # True if set_threads restarts it (warm up again)
    measures_build_memory = (
        False  # True: the run adds a build-memory row (vecdb.bench.build_memory)
    )
    default_sweep: Sequence[Params] | Mapping[str, Sequence[Any]] = ({},)

    def __init__(self, metric: str, dim: int, n: int, build_params: Mapping[str, Any]) -> None:
        self.metric = metric  # "l2" | "ip" | "cosine"
        self.dim = dim  # vector dimension
        self.n = n  # number of base vectors it is built on
        self.build_params: Params = self.resolve_build_params(dict(build_params))

    def resolve_build_params(self, given: Params) -> Params:
        """Fill build-time defaults that depend on n and d; the result is recorded per row."""
        return given

    @abstractmethod
    def build(self, base: npt.NDArray[np.float32], workdir: Path) -> None:
        """Build the index on `base` (row i has id i) with the current thread count."""

    @abstractmethod
    def set_params(self, params: Params) -> None:
        """Apply one setting of the search-time sweep."""

    @abstractmethod
    def set_threads(self, n: int) -> None:
        """Pin the number of threads the next calls may use."""

    @abstractmethod
    def search(self, queries: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
        """Top-k base row ids per query, padded with -1."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Persist the index under `directory` so `load` can reopen it in another process."""

    @abstractmethod
    def load(self, directory: Path) -> None:
        """Reopen an index written by `save` (used by the fresh memory subprocess)."""

    def import_libraries(self) -> None:  # noqa: B027 (an optional hook)
        """Import everything `load` needs, so a memory baseline taken after this excludes it."""

    def close(self) -> None:  # noqa: B027 (an optional hook)
        """Release the index and any files or threads it holds."""

    def cpu_seconds(self) -> float:
        """CPU seconds spent so far by every process doing this system's work."""
        return time.process_time()

    def rss_baseline_kib(self) -> dict[str, int] | None:
        """RssAnon/RssFile (KiB) of the serving process before any index is loaded, if that
        process is not this one (remote mode); None means "this process, now"."""
        return None

    def rss_kib(self) -> dict[str, int] | None:
        """RssAnon/RssFile (KiB) of the process holding the index, or None for this one."""
        return None

    def measure_io(self, run: Callable[[], None], n_queries: int) -> tuple[float, float] | None:
        """Call `run` (one batch search) and return its (posting reads, bytes read) per query,
        or None when the system exposes no I/O counters."""
        run()
        return None


def make_system(
    name: str,
    metric: str,
    dim: int,
    n: int,
    build_params: Mapping[str, Any] | None = None,
    base: str | None = None,
) -> System:
    """Instantiate the system registered as `base` (default: `name`), reporting as `name`."""
    import importlib

    kind = base or name
    if kind not in REGISTRY:
        raise InvalidArgument(f"unknown system {kind!r}; known: {', '.join(REGISTRY)}")
    module, cls_name = REGISTRY[kind]
    cls = getattr(importlib.import_module(module), cls_name)
    system: System = cls(metric, dim, n, build_params or {})
    system.name = name
    return system


def variants_of(systems_config: Mapping[str, Any]) -> dict[str, str]:
    """Config-defined systems: {"NAME": {"base": REGISTERED, ...}} -> {NAME: REGISTERED}."""
    out: dict[str, str] = {}
    for name, cfg in systems_config.items():
        base = cfg.get("base") if isinstance(cfg, Mapping) else None
        if base is None:
            continue
        if base not in REGISTRY or name in REGISTRY:
            raise InvalidArgument(
                f"config system {name!r}: base must be a registered system and the name new; "
                f"known: {', '.join(REGISTRY)}"
            )
        out[name] = str(base)
    return out


def parse_systems(spec: str, variants: Mapping[str, str] | None = None) -> list[str]:
    """`--systems a,b,alias` -> names in registry order (a config variant right after its
    base), without duplicates."""
    variants = variants or {}
    wanted: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in ALIASES:
            wanted.update(ALIASES[part])
        elif part in REGISTRY or part in variants:
            wanted.add(part)
        else:
            known = ", ".join([*REGISTRY, *variants, *ALIASES])
            raise InvalidArgument(f"--systems: unknown system {part!r}; known: {known}")
    if not wanted:
        raise InvalidArgument("--systems: no system named")
    order = [x for reg in REGISTRY for x in (reg, *[v for v, b in variants.items() if b == reg])]
    return [name for name in order if name in wanted]


def expand_sweep(sweep: Sequence[Params] | Mapping[str, Sequence[Any]]) -> list[Params]:
    """A dict of lists is the grid of all combinations (last key varies fastest); a list of
    dicts is used as is."""
    if isinstance(sweep, Mapping):
        keys = list(sweep)
        for key in keys:
            if isinstance(sweep[key], str | bytes) or not isinstance(sweep[key], Sequence):
                raise InvalidArgument(f"sweep {key!r}: expected a list of values")
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*sweep.values())]
    return [dict(p) for p in sweep]


def directory_bytes(path: Path) -> int:
    """Total size of the regular files under `path` (or of `path` itself)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            fp = Path(root) / f
            if fp.is_file() and not fp.is_symlink():
                total += fp.stat().st_size
    return total


def power_of_two_near(x: float, lo: int = 1, hi: int = 1 << 20) -> int:
    """The power of two nearest to `x` on a log scale, clamped to [lo, hi]."""
    p = 1 << max(0, round(np.log2(max(x, 1.0))))
    return int(min(max(p, lo), hi))
