"""Every index build and search parameter, with its named bounds, in one place.

This module owns the names, defaults and bounds (`DEFAULT_`, `MIN_`, `MAX_`) of the SPANN
index's parameters, their validation (an `InvalidArgument` naming the parameter) and a
human-readable spec string. `PARAMS.md` at the repository root explains each trade-off. It
must not hold algorithm code: the index reads validated dataclasses from here.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from vecdb.errors import InvalidArgument
from vecdb.kernels.posting import BITS_GROUP, SLOT_BYTES, block_layout, vector_bytes
from vecdb.kernels.posting import BITS_WIDTH as BITS_WIDTH  # re-exported

# --- build parameters -------------------------------------------------------------------------
DEFAULT_HEAD_FRACTION, MIN_HEAD_FRACTION, MAX_HEAD_FRACTION = 0.045, 0.001, 0.5
DEFAULT_REPLICAS, MIN_REPLICAS, MAX_REPLICAS = 8, 1, 32
DEFAULT_CANDIDATES, MIN_CANDIDATES, MAX_CANDIDATES = 32, 1, 256
DEFAULT_RNG_FACTOR, MIN_RNG_FACTOR, MAX_RNG_FACTOR = 1.0, 0.1, 10.0
DEFAULT_POSTING_PAGES, MIN_POSTING_PAGES, MAX_POSTING_PAGES = 0, 0, 4096  # 0 = auto
DEFAULT_POSTING_VECTORS, MIN_POSTING_VECTORS, MAX_POSTING_VECTORS = 200, 8, 100_000
DEFAULT_MERGE_THRESHOLD, MIN_MERGE_THRESHOLD, MAX_MERGE_THRESHOLD = 10, 0, 10_000
DEFAULT_MAX_BLOCKS, MIN_MAX_BLOCKS, MAX_MAX_BLOCKS = 4, 1, 64
DEFAULT_BLOCK_PAGES, MIN_BLOCK_PAGES, MAX_BLOCK_PAGES = 16, 1, 4096
DEFAULT_REASSIGN_K, MIN_REASSIGN_K, MAX_REASSIGN_K = 4, 0, 64
DEFAULT_COMPACT_GARBAGE, MIN_COMPACT_GARBAGE, MAX_COMPACT_GARBAGE = 0.05, 0.01, 1.0
DEFAULT_MAX_DISK_RATIO, MIN_MAX_DISK_RATIO, MAX_MAX_DISK_RATIO = 3.0, 0.25, 1000.0
# A better head graph and better-placed replicas reach recall@10 0.95 reading fewer postings:
# head_m 12 -> 16, head_ef_construction 100 -> 200, build_ef 48 -> 96 (2026-12-03): GloVe-50
# 55 -> 46 postings, MiniLM-384 ("bits") 20 -> 16 (bench/RESULTS.md, "replica placement
# and the head graph"); build +40%, head graph +16 bytes a head (2 x 4 more level-0 links)
DEFAULT_HEAD_M, MIN_HEAD_M, MAX_HEAD_M = 16, 4, 64
DEFAULT_HEAD_EF_CONSTRUCTION, MIN_HEAD_EF_CONSTRUCTION, MAX_HEAD_EF_CONSTRUCTION = 200, 16, 2000
DEFAULT_BUILD_EF, MIN_BUILD_EF, MAX_BUILD_EF = 96, 1, 4096
DEFAULT_THREADS, MIN_THREADS, MAX_THREADS = 0, 0, 1024  # 0 = all cores
DEFAULT_SEED, MIN_SEED, MAX_SEED = 0, 0, 2**31 - 1
IO_MODES = ("auto", "mmap", "direct")
DEFAULT_IO = "auto"
VECTOR_DTYPES = ("float32", "float16", "int8", "bits")
BITS = "bits"  # 1-bit codes (RaBitQ-style) re-ranked from the rerank store (issue 12); its
# `BuildParams.width` is the block layout's BITS_WIDTH (8: an entry is whole 8-byte words)
DEFAULT_VECTOR_DTYPE = "float16"
# A new index of this many dimensions or more, given no vector_dtype (and not rerank "none"),
# gets "bits" postings (with a float16 rerank store): at recall@10 0.95 on MiniLM-384 1.3-1.7x
# the QPS of the graph indexes where float16 postings reach ~0.5x, and on random 1024-d 0.95
# where float16 tops out at 0.94 (bench/RESULTS.md, "minilm-384-bits-peers",
# "random-1024-bits"); GloVe-50 stays float16 (1-bit codes of 50 dimensions rank poorly)
BITS_MIN_DIM = 256
# A new narrower index, given no vector_dtype (and not rerank "none"), gets int8 postings with
# a float16 rerank store: GloVe-50 at recall@10 0.95 reads ~0.6x float16's bytes a query
# (~590 vs ~975 KB) for ~0.93x its warm single-query QPS, and its files take 2.57x the raw
# bytes against 2.91x (bench/RESULTS.md, "int8 postings with a rerank store as the default
# below 256 dimensions")
NARROW_DEFAULT_DTYPE = "int8"
RERANK_DTYPES = ("none", "float16", "float32")  # the rerank store's rows (issue 12)
# Where the rerank store puts a vector's row: "slot" (row = slot, no map) or "head" (the bulk
# build writes its rows in the order of their nearest heads, a slot -> row map in memory and
# in the state file), so that a query's candidates, which lie in the few postings it read,
# share device requests when read cold. A new "bits" index (rows of >= 512 bytes, 50 of them
# a query) gets "head": MiniLM-384 cold with 16 in flight ~860 -> ~990 QPS, 44 device
# requests a query instead of 64 (bench/RESULTS.md, "rerank rows in head order"); others
# "slot" (16 rows of 100 bytes a query gain little, and the map's 4 bytes a vector would be
# 2% of a 50-d index's raw bytes). An index created before keeps "slot".
ROW_ORDERS = ("slot", "head")
DEFAULT_ROW_ORDER = "slot"
# The random rotation of "bits" codes (`kernels.hadamard`): "dense", an orthogonal d x d
# matrix (d^2 multiply-adds a vector: ~110 us at 1,536 dimensions, ~40% of a query's time
# there and most of the time of coding rows), or "hadamard", sign flips and Walsh-Hadamard
# transforms (O(d log d), ~20 us at 1,536-d). A new "bits" index gets "hadamard"; one
# created before keeps the dense matrix its state file holds (bench/RESULTS.md, "a
# structured rotation for the bit codes").
ROTATIONS = ("dense", "hadamard")
DEFAULT_ROTATION = "dense"
DEFAULT_RERANK = "none"
# How the head graph stores its vectors (`index.spann.headgraph`): int8 codes with a float32
# scale per head (any range), float16 (only when the index's rows are float16, so its vectors
# fit float16's range), float32. int8 by default since 2026-12-04: MiniLM-384 single queries
# side by side 4-9% off the p50 and 2-10% off the p99 at equal recall, 388 bytes a head
# instead of 768 (bench/RESULTS.md, "int8 head vectors, the default").
# A form's index in HEAD_DTYPES is its code in the head file: append only.
HEAD_DTYPES = ("int8", "float16", "float32")
DEFAULT_HEAD_DTYPE = "int8"
MAX_FLOAT16 = 65_000.0  # float16 postings reject components beyond this (float16 max 65504)

# --- search parameters ------------------------------------------------------------------------
DEFAULT_MAX_POSTINGS, MIN_MAX_POSTINGS, MAX_MAX_POSTINGS = 48, 1, 4096
# prune_ratio when a request gives none (`prune_ratio_for`): for "l2" and "cosine" a ratio
# of squared distances (the nearest half of max_postings is read whatever it says,
# `posting.ALWAYS_SHARE`); at recall@10 0.95 1.5 read ~18% fewer postings than no pruning on
# MiniLM-384 and ~6% fewer on GloVe-50, and it never fires on structureless data
# (bench/RESULTS.md, "query-aware pruning on by default"). "ip" compares a gap with the best
# head's magnitude, which a ratio near 1 cuts hard when that is small: on random 384-d data
# under "ip" 1.5 took recall@10 at 128 postings from 0.60 to 0.44 where 8.0 pruned nothing,
# so "ip" keeps 8.0.
DEFAULT_PRUNE_RATIO, MIN_PRUNE_RATIO, MAX_PRUNE_RATIO = 1.5, 1.0, 1e9
DEFAULT_PRUNE_RATIO_IP = 8.0
DEFAULT_HEAD_EF, MIN_HEAD_EF, MAX_HEAD_EF = 64, 1, 100_000
DEFAULT_RERANK_K, MIN_RERANK_K, MAX_RERANK_K = 16, 0, 4096  # issue 12
# rerank_k of a "bits" index when the request gives none: 1-bit estimates need far more
# candidates than int8 codes (MiniLM-384, 64 postings, offline: R = 50 loses 0.0015 recall
# against the float16 scan, R = 100 none; bench/RESULTS.md "Issue 12: 1-bit posting codes")
DEFAULT_BITS_RERANK_K = 100
# rerank_eps: standard deviations of a 1-bit estimate's error below it that a "bits" scan
# keys its candidates by (a lower bound of the distance), so that the exact rerank stops at
# the first candidate whose bound exceeds the k-th exact distance; 0: rerank all rerank_k
DEFAULT_RERANK_EPS, MIN_RERANK_EPS, MAX_RERANK_EPS = 0.0, 0.0, 100.0
# Posting size of a "bits" index when not given: 4x float16's entries per posting (4x fewer
# heads). MiniLM-384 (390,000, recall@10 0.95, 1 thread, 5 rounds alternated, medians of the
# per-round ratios to float16): 1x (head_fraction 0.045, posting_vectors 200) 1.19x float16's
# QPS at 0.14x its KB per query; 4x 1.44x at 0.17x; 12x 1.03x at 0.31x (bench/RESULTS.md
# "Issue 12: 1-bit posting codes in the engine")
DEFAULT_BITS_HEAD_FRACTION, DEFAULT_BITS_POSTING_VECTORS = 0.045 / 4, 800
# Posting size of an int8 index with a rerank store (the default below BITS_MIN_DIM) when not
# given: 2x float16's entries per posting, half the heads. GloVe-50 at recall@10 0.95
# (`python -m vecdb.bench.spann_defaults --configs i8-200 i8-400 --cold --rounds 3`): 1.02x
# the warm 1-thread QPS, 1.06x the cold QPS with 16 in flight (43 device reads a query
# instead of 55, 520 KB instead of 440), half the head graph's memory; 1,000,000 x 96
# synthetic: equal speed, 0.54x the resident memory, 0.8x the build (bench/RESULTS.md,
# "half the heads for int8 postings")
DEFAULT_INT8_HEAD_FRACTION, DEFAULT_INT8_POSTING_VECTORS = 0.045 / 2, 400

PAGE_SIZE = 4096


def _check_number(
    name: str, value: Any, lo: float, hi: float, integer: bool, field: str | None = None
) -> Any:
    """Validate one numeric parameter; the error names the parameter and its bounds (and
    `field`, the request field it came in)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(f"{name} must be a number, got {value!r}", field=field)
    if integer and not (isinstance(value, numbers.Integral) or float(value).is_integer()):
        raise InvalidArgument(f"{name} must be an integer, got {value!r}", field=field)
    number = float(value)
    if not (lo <= number <= hi):  # also rejects NaN
        raise InvalidArgument(f"{name} must be in [{lo}, {hi}], got {value!r}", field=field)
    return int(number) if integer else number


_CACHE: dict[tuple[type[Any], tuple[tuple[str, type[Any], Any], ...]], Any] = {}
_CACHE_MAX = 1024  # distinct parameter sets remembered (a search parses on every call)


def _name(item: tuple[str, type[Any], Any]) -> str:
    return item[0]


def _parse(cls: type[Any], given: Mapping[str, Any] | None, table: dict[str, Any], arg: str) -> Any:
    """Build a params dataclass from a mapping, rejecting unknown names; valid sets of
    hashable values are remembered so a repeated request skips validation. Errors name the
    field as `arg`.name (`arg`: the request argument the mapping came in)."""
    given = dict(given or {})
    try:
        # The type is part of the key: 1 and True (or 7 and 7.5's int) compare equal but
        # validate differently, so a cached answer must not be reused across types.
        key = (cls, tuple(sorted(((k, type(v), v) for k, v in given.items()), key=_name)))
        hit = _CACHE.get(key)
    except TypeError:  # unhashable values: validate (and reject) below
        key, hit = None, None
    if hit is not None:
        return hit
    out = _validate(cls, given, table, arg)
    if key is not None and len(_CACHE) < _CACHE_MAX:
        _CACHE[key] = out
    return out


def _validate(cls: type[Any], given: dict[str, Any], table: dict[str, Any], arg: str) -> Any:
    unknown = sorted(set(given) - {f.name for f in fields(cls)})
    if unknown:
        raise InvalidArgument(f"unknown {cls.__name__} parameter(s): {', '.join(unknown)}",
                              field=f"{arg}.{unknown[0]}")  # fmt: skip
    values: dict[str, Any] = {}
    for f in fields(cls):
        default, lo, hi = table[f.name]
        value = given.get(f.name, default)
        if lo is None:  # an enumerated string
            if value not in hi:
                raise InvalidArgument(f"{f.name} must be one of {hi}, got {value!r}",
                                      field=f"{arg}.{f.name}")  # fmt: skip
            values[f.name] = value
        elif value is None and default is None:  # not given: the index resolves it
            values[f.name] = None
        else:
            unset = default is None  # an index-resolved default: typed by its bounds
            integer = isinstance(lo if unset else default, int)
            values[f.name] = _check_number(f.name, value, lo, hi, integer, f"{arg}.{f.name}")
    return cls(**values)


def _spec(obj: Any, kind: str) -> str:
    return f"{kind}(" + ", ".join(f"{k}={v}" for k, v in asdict(obj).items()) + ")"


@dataclass(frozen=True)
class BuildParams:
    """Parameters fixed when the index is created (stored in its manifest)."""

    head_fraction: float  # heads per vector (memory vs posting length)
    replicas: int  # max postings a vector is written to
    candidates: int  # nearest heads considered for the RNG rule
    rng_factor: float  # RNG rule factor on squared distances
    posting_pages: int  # page budget per posting; 0 = derive from posting_vectors
    posting_vectors: int  # entries the auto page budget must hold (SPTAG uses 118)
    merge_threshold: int  # postings with fewer live entries are merged away
    max_blocks: int  # appended blocks per posting before it is rewritten
    block_pages: int  # largest block in 4 KiB pages; a bigger posting is a chain of blocks
    reassign_k: int  # nearby postings checked for LIRE reassignment after a split
    compact_garbage: float  # dead-byte fraction of the file that triggers compaction
    max_disk_ratio: float  # build: posting entries at most this x the raw float32 bytes
    head_m: int  # hnswlib M of the head graph
    head_ef_construction: int  # hnswlib ef_construction of the head graph
    build_ef: int  # hnswlib ef when finding a vector's candidate heads
    threads: int  # build threads; 0 = all cores
    seed: int  # random seed of the clustering
    io: str  # posting reader: auto | mmap | direct
    vector_dtype: str  # how postings store components: float32 | float16 | int8 | bits
    rerank: str = DEFAULT_RERANK  # exact-rerank store rows: none | float16 | float32
    head_dtype: str = DEFAULT_HEAD_DTYPE  # head graph vectors: int8 | float16 | float32
    row_order: str = DEFAULT_ROW_ORDER  # rerank store rows: slot | head (`ROW_ORDERS`)
    rotation: str = DEFAULT_ROTATION  # "bits" codes' rotation: dense | hadamard (`ROTATIONS`)

    @classmethod
    def parse(cls, given: Mapping[str, Any] | None, dim: int | None = None) -> BuildParams:
        """Validated parameters. "bits" postings need the rerank store: `rerank` not given
        means float16 rows with them, and "none" given is an error naming both; their
        `head_fraction` and `posting_vectors` not given are DEFAULT_BITS_* (4x larger
        postings). With `dim` (an index being created), `vector_dtype` not given and
        `rerank` not "none": "bits" from BITS_MIN_DIM dimensions, else int8
        (NARROW_DEFAULT_DTYPE), each with float16 rerank rows unless `rerank` is given;
        with rerank "none" float16. int8 postings with a rerank store take
        DEFAULT_INT8_* for `head_fraction` and `posting_vectors` not given (2x larger
        postings). A "bits" index being created (`dim` given) gets `row_order` "head" and
        `rotation` "hadamard" unless given. An index once created keeps the parameters its
        manifest stores (one created before a default moved keeps its dtype)."""
        if (
            dim is not None
            and (given is None or "vector_dtype" not in given)
            and (given or {}).get("rerank") != "none"
        ):
            dtype = BITS if dim >= BITS_MIN_DIM else NARROW_DEFAULT_DTYPE
            given = {"rerank": "float16"} | dict(given or {}, vector_dtype=dtype)
        if given is not None and given.get("vector_dtype") == BITS:
            bits = {
                "rerank": "float16",
                "head_fraction": DEFAULT_BITS_HEAD_FRACTION,
                "posting_vectors": DEFAULT_BITS_POSTING_VECTORS,
            }
            if dim is not None:  # (an index being created; one opened keeps its manifest's)
                bits["row_order"] = "head"
                bits["rotation"] = "hadamard"
            given = bits | dict(given)
            if given["rerank"] == "none":
                raise InvalidArgument(
                    'vector_dtype="bits" needs the rerank store (1-bit codes only pick '
                    'candidates): rerank must be "float16" or "float32", not "none"',
                    field="index_params.rerank",
                )
        if (
            given is not None
            and given.get("vector_dtype") == "int8"
            and given.get("rerank", DEFAULT_RERANK) != "none"
        ):
            int8 = {
                "head_fraction": DEFAULT_INT8_HEAD_FRACTION,
                "posting_vectors": DEFAULT_INT8_POSTING_VECTORS,
            }
            given = int8 | dict(given)
        out: BuildParams = _parse(cls, given, _BUILD_TABLE, "index_params")
        if out.head_dtype == "float16" and not out.float16_rows:
            raise InvalidArgument(
                'head_dtype="float16" needs vectors known to fit float16\'s range: '
                'vector_dtype="float16" or rerank="float16" (else "int8" or "float32")',
                field="index_params.head_dtype",
            )
        if out.row_order == "head" and out.rerank == "none":
            raise InvalidArgument(
                'row_order="head" orders the rerank store\'s rows: it needs rerank "float16" '
                'or "float32", not "none"',
                field="index_params.row_order",
            )
        return out

    def spec(self) -> str:
        return _spec(self, "spann")

    @property
    def width(self) -> int:
        """Bytes per stored component (for "bits", per 8-byte word: see `block_dim`)."""
        return {"float32": 4, "float16": 2, "int8": 1, BITS: BITS_WIDTH}[self.vector_dtype]

    @property
    def float16_rows(self) -> bool:
        """Whether the index keeps vectors as float16 (postings or rerank store rows): it
        refuses components beyond MAX_FLOAT16."""
        return self.vector_dtype == "float16" or self.rerank == "float16"

    def block_dim(self, dim: int) -> int:
        """Components per entry in the posting blocks, each `width` bytes: `dim`, or for
        "bits" the code's ceil(dim / 64) words and one word of two factors (the block
        header's `dim`; a lane group stores its factors in half that: `posting.vector_bytes`)."""
        return -(-dim // 64) + 1 if self.vector_dtype == BITS else dim

    def entry_bytes(self, dim: int) -> int:
        """Bytes of one posting entry: its components (for "bits" its share of a lane group:
        the code words and two bfloat16 factors) + uint32 slot + uint8 version."""
        group = vector_bytes(self.width, self.block_dim(dim), BITS_GROUP)
        return int(group) // BITS_GROUP + SLOT_BYTES + 1

    def posting_limit(self, dim: int) -> tuple[int, int]:
        """(pages, entries) of the posting budget for `dim`-d vectors stored as `vector_dtype`."""
        entry = self.entry_bytes(dim)
        pages = self.posting_pages or max(3, -(-self.posting_vectors * entry // PAGE_SIZE))
        return pages, max(8, (pages * PAGE_SIZE - 64) // entry)

    def block_entries(self, dim: int) -> int:
        """Most entries one block holds within `block_pages` pages (header, alignment and a
        "bits" block's tail outside its lane groups included: `block_layout` decides); at
        least one."""
        room = self.block_pages * PAGE_SIZE
        cap = max(1, (room - 128) // self.entry_bytes(dim))
        while cap > 1 and block_layout(cap, self.block_dim(dim), self.width)[2] > room:
            cap -= 1
        return cap


@dataclass(frozen=True)
class SearchParams:
    """Per-request search parameters."""

    max_postings: int  # cap on postings read per query (the main recall/speed knob)
    # read a posting only if its head is within ratio x the nearest head; None: the
    # metric's default (`prune_ratio_for`)
    prune_ratio: float | None
    head_ef: int  # hnswlib ef of the head search (raised to max_postings if lower)
    # candidates re-ranked exactly (with a rerank store); None: the index's default
    # (`rerank_candidates`: DEFAULT_RERANK_K, or for "bits" postings the index's calibrated
    # value, DEFAULT_BITS_RERANK_K without one)
    rerank_k: int | None = None
    # "bits": rerank only candidates whose estimate less rerank_eps standard deviations of
    # its error is below the k-th exact distance (0: all rerank_k of them)
    rerank_eps: float = DEFAULT_RERANK_EPS

    @classmethod
    def parse(cls, given: Mapping[str, Any] | None) -> SearchParams:
        return _parse(cls, given, _SEARCH_TABLE, "params")  # type: ignore[no-any-return]

    def spec(self) -> str:
        return _spec(self, "search")


def prune_ratio_for(sp: SearchParams, metric: str) -> float:
    """The `prune_ratio` a search uses on an index of `metric`: the request's, else
    DEFAULT_PRUNE_RATIO_IP for "ip" and DEFAULT_PRUNE_RATIO for "l2" and "cosine"."""
    if sp.prune_ratio is not None:
        return sp.prune_ratio
    return DEFAULT_PRUNE_RATIO_IP if metric == "ip" else DEFAULT_PRUNE_RATIO


def rerank_candidates(sp: SearchParams, vector_dtype: str, calibrated: int = 0) -> int:
    """The `rerank_k` a search uses on an index whose postings are `vector_dtype`: the
    request's, else for "bits" the index's `calibrated` value (its last bulk build's,
    `spann.calibrate`; 0: none) or DEFAULT_BITS_RERANK_K, else DEFAULT_RERANK_K."""
    if sp.rerank_k is not None:
        return sp.rerank_k
    if vector_dtype == BITS:
        return calibrated or DEFAULT_BITS_RERANK_K
    return DEFAULT_RERANK_K


_BUILD_TABLE: dict[str, Any] = {
    "head_fraction": (DEFAULT_HEAD_FRACTION, MIN_HEAD_FRACTION, MAX_HEAD_FRACTION),
    "replicas": (DEFAULT_REPLICAS, MIN_REPLICAS, MAX_REPLICAS),
    "candidates": (DEFAULT_CANDIDATES, MIN_CANDIDATES, MAX_CANDIDATES),
    "rng_factor": (DEFAULT_RNG_FACTOR, MIN_RNG_FACTOR, MAX_RNG_FACTOR),
    "posting_pages": (DEFAULT_POSTING_PAGES, MIN_POSTING_PAGES, MAX_POSTING_PAGES),
    "posting_vectors": (DEFAULT_POSTING_VECTORS, MIN_POSTING_VECTORS, MAX_POSTING_VECTORS),
    "merge_threshold": (DEFAULT_MERGE_THRESHOLD, MIN_MERGE_THRESHOLD, MAX_MERGE_THRESHOLD),
    "max_blocks": (DEFAULT_MAX_BLOCKS, MIN_MAX_BLOCKS, MAX_MAX_BLOCKS),
    "block_pages": (DEFAULT_BLOCK_PAGES, MIN_BLOCK_PAGES, MAX_BLOCK_PAGES),
    "reassign_k": (DEFAULT_REASSIGN_K, MIN_REASSIGN_K, MAX_REASSIGN_K),
    "compact_garbage": (DEFAULT_COMPACT_GARBAGE, MIN_COMPACT_GARBAGE, MAX_COMPACT_GARBAGE),
    "max_disk_ratio": (DEFAULT_MAX_DISK_RATIO, MIN_MAX_DISK_RATIO, MAX_MAX_DISK_RATIO),
    "head_m": (DEFAULT_HEAD_M, MIN_HEAD_M, MAX_HEAD_M),
    "head_ef_construction": (
        DEFAULT_HEAD_EF_CONSTRUCTION,
        MIN_HEAD_EF_CONSTRUCTION,
        MAX_HEAD_EF_CONSTRUCTION,
    ),
    "build_ef": (DEFAULT_BUILD_EF, MIN_BUILD_EF, MAX_BUILD_EF),
    "threads": (DEFAULT_THREADS, MIN_THREADS, MAX_THREADS),
    "seed": (DEFAULT_SEED, MIN_SEED, MAX_SEED),
    "io": (DEFAULT_IO, None, IO_MODES),
    "vector_dtype": (DEFAULT_VECTOR_DTYPE, None, VECTOR_DTYPES),
    "rerank": (DEFAULT_RERANK, None, RERANK_DTYPES),
    "head_dtype": (DEFAULT_HEAD_DTYPE, None, HEAD_DTYPES),
    "row_order": (DEFAULT_ROW_ORDER, None, ROW_ORDERS),
    "rotation": (DEFAULT_ROTATION, None, ROTATIONS),
}

_SEARCH_TABLE: dict[str, Any] = {
    "max_postings": (DEFAULT_MAX_POSTINGS, MIN_MAX_POSTINGS, MAX_MAX_POSTINGS),
    "prune_ratio": (None, MIN_PRUNE_RATIO, MAX_PRUNE_RATIO),  # None: `prune_ratio_for`
    "head_ef": (DEFAULT_HEAD_EF, MIN_HEAD_EF, MAX_HEAD_EF),
    "rerank_k": (None, MIN_RERANK_K, MAX_RERANK_K),  # None: `rerank_candidates`
    "rerank_eps": (DEFAULT_RERANK_EPS, MIN_RERANK_EPS, MAX_RERANK_EPS),
}
