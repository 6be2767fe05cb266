"""Engine settings: write-buffer caps, backpressure and the maintenance worker, with bounds.

Owns the names, defaults and bounds (`DEFAULT_`, `MIN_`, `MAX_`) of the settings that shape
how writes reach a disk index, their validation (an `InvalidArgument` naming the setting) and
their spec string. PARAMS.md explains each trade-off. Set per database
(`Database(path, settings=...)`, the server's `[engine]` config section); they are not stored
with the data, so they can change between runs.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from vecdb.errors import InvalidArgument

MIB = 2**20

# Before a collection's index is first built, its writes wait in the exact write buffer; a
# bulk build starts once the buffer holds this many bytes of vectors (or earlier: optimize(),
# or `build_min_vectors` buffered and `idle_seconds` without writes). 0 (the default): half of
# `buffer_max_bytes` (`EngineSettings.first_build_bytes`; 512 MiB at the default cap), so a
# load still streaming in is not built from its first part only to be rebuilt from everything
# moments later (REBUILD_SHARE below), and half the buffer is left for the writes that arrive
# while the build runs, whatever cap is set. 390,000 MiniLM-384 vectors (571 MiB) through the
# SDK, upserts then optimize: 50-55 s at 256 MiB (a first build of 256 MiB beside the upserts,
# then a rebuild of all), 38-40 s at 512 MiB (one build), same recall (bench/RESULTS.md, "the
# first build waits for 512 MiB").
# With 0, a load still streaming in past that point is not built from its first half either
# when the index can take its buffer's overflow on its disk (SPANN: `spill_build_bytes`): the
# buffer goes on in files there past SPILL_FROM_BYTES (page cache, not counted by the cap;
# the build's peak RssAnon at 200,000 x 1,536 0.63x the raw bytes spilling past 512 MiB,
# 0.24x past 64 MiB, the build as fast) and the one bulk build
# starts when the writes pause, at optimize(), or at `rebuild_max_bytes` (everything a
# rebuild would have read back anyway). 200,000 x 1,536 float32 (1,172 MiB) upserted then
# optimized (scratch `load.py`, alternating): 43.5 / 43.5 s spilled and built once, against
# 50.6 / 53.8 s as a first build of 512 MiB beside the upserts plus a rebuild of all; the
# bench's build 0.54x -> 0.44x hnswlib's (medians; bench/RESULTS.md, "built once").
DEFAULT_BULK_BUILD_BYTES, MIN_BULK_BUILD_BYTES, MAX_BULK_BUILD_BYTES = 0, 0, 2**40
SPILL_FROM_BYTES = 64 * MIB  # a spilling buffer holds at most this much in memory
# An unbuilt collection with fewer buffered vectors than this stays exact (no index) until
# optimize() or the bulk threshold: a small collection is searched exactly by the buffer.
DEFAULT_BUILD_MIN_VECTORS, MIN_BUILD_MIN_VECTORS, MAX_BUILD_MIN_VECTORS = 20_000, 1, 2**40
# Once built, buffered writes are applied to the index when this many are waiting (or after
# `idle_seconds` without writes, or at optimize()).
DEFAULT_DRAIN_VECTORS, MIN_DRAIN_VECTORS, MAX_DRAIN_VECTORS = 20_000, 1, 2**40
# A drain whose buffer holds at least `REBUILD_SHARE` x the vectors already indexed rebuilds
# the index from all of them (stored vectors read back from RocksDB) instead of inserting one
# by one, while everything together holds at most this many bytes of vectors (0: never).
# A bulk build clusters better and is far faster than growing an index by inserts: 390,000
# MiniLM vectors (571 MiB) arrived as a 256 MiB first build plus 215,000 inserts, 416 s.
# 2 GiB since 2026-12-07 (1 GiB before): 200,000 x 1,536 float32 (1,172 MiB) upserted then
# optimized took 153.8 s as a first build plus 113,000 inserts, 76.5 s with the rebuild, the
# peak RssAnon of the process and its children 1,264 -> 1,968 MiB (1.08x -> 1.68x raw).
DEFAULT_REBUILD_MAX_BYTES, MIN_REBUILD_MAX_BYTES, MAX_REBUILD_MAX_BYTES = 2048 * MIB, 0, 2**40
REBUILD_SHARE = 0.2
# A rebuild starts, and a buffer spills to files, only while the disk has this many times the
# bytes of vectors involved free: the gathered input, a new posting file (<= 4x), the spill.
BUILD_DISK_X = 8.0
# Seconds without writes to a collection after which the worker indexes what is buffered.
DEFAULT_IDLE_SECONDS, MIN_IDLE_SECONDS, MAX_IDLE_SECONDS = 2.0, 0.0, 86_400.0
# Backpressure: writers wait while a collection's buffers (being written plus being applied)
# hold more than this many bytes of vectors ...
DEFAULT_BUFFER_MAX_BYTES, MIN_BUFFER_MAX_BYTES, MAX_BUFFER_MAX_BYTES = 1024 * MIB, MIB, 2**42
# ... but never longer than this per request; then the write fails with ResourceExhausted
# (retryable, with retry_after) and nothing of it is stored.
DEFAULT_STALL_TIMEOUT, MIN_STALL_TIMEOUT, MAX_STALL_TIMEOUT = 30.0, 0.0, 3600.0
# The worker runs index maintenance (splits, merges, clean-up) in slices of this many seconds,
# so that buffer drains and other collections get their turn.
DEFAULT_MAINTAIN_SLICE, MIN_MAINTAIN_SLICE, MAX_MAINTAIN_SLICE = 0.5, 0.01, 60.0
# Vectors applied to a built index per call (progress and cancellation granularity).
DEFAULT_APPLY_BATCH, MIN_APPLY_BATCH, MAX_APPLY_BATCH = 8192, 64, 1_000_000
# After a failed index job the worker waits this long before retrying it.
DEFAULT_RETRY_SECONDS, MIN_RETRY_SECONDS, MAX_RETRY_SECONDS = 5.0, 0.0, 3600.0


@dataclass(frozen=True)
class EngineSettings:
    """How a database moves writes from its exact buffers into its indexes."""

    bulk_build_bytes: int = DEFAULT_BULK_BUILD_BYTES  # buffer bytes of a first build; 0: auto
    build_min_vectors: int = DEFAULT_BUILD_MIN_VECTORS  # smaller unbuilt collections stay exact
    drain_vectors: int = DEFAULT_DRAIN_VECTORS  # buffered vectors that start a drain
    rebuild_max_bytes: int = DEFAULT_REBUILD_MAX_BYTES  # largest drain done as a rebuild
    idle_seconds: float = DEFAULT_IDLE_SECONDS  # quiet time before the worker indexes the rest
    buffer_max_bytes: int = DEFAULT_BUFFER_MAX_BYTES  # writers wait above this (backpressure)
    stall_timeout: float = DEFAULT_STALL_TIMEOUT  # longest wait of one write, in seconds
    maintain_slice: float = DEFAULT_MAINTAIN_SLICE  # seconds of maintenance per worker turn
    apply_batch: int = DEFAULT_APPLY_BATCH  # vectors per index.add call of a drain
    retry_seconds: float = DEFAULT_RETRY_SECONDS  # pause after a failed index job

    @classmethod
    def parse(cls, given: Mapping[str, Any] | None) -> EngineSettings:
        """Validated settings from a mapping (unknown names and out-of-range values are
        `InvalidArgument` naming the setting)."""
        given = dict(given or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise InvalidArgument(f"unknown engine setting(s): {', '.join(unknown)}",
                                  field=f"engine.{unknown[0]}")  # fmt: skip
        values: dict[str, Any] = {}
        for f in fields(cls):
            default, lo, hi = _BOUNDS[f.name]
            value = given.get(f.name, default)
            integer = isinstance(default, int)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InvalidArgument(f"engine setting {f.name} must be a number, got {value!r}",
                                      field=f"engine.{f.name}")  # fmt: skip
            if integer and not float(value).is_integer():
                raise InvalidArgument(f"engine setting {f.name} must be an integer, got {value!r}",
                                      field=f"engine.{f.name}")  # fmt: skip
            if not lo <= float(value) <= hi:  # also rejects NaN
                raise InvalidArgument(
                    f"engine setting {f.name} must be in [{lo}, {hi}], got {value!r}",
                    field=f"engine.{f.name}",
                )
            values[f.name] = int(float(value)) if integer else float(value)
        return cls(**values)

    @property
    def first_build_bytes(self) -> int:
        """Buffered vector bytes that start a collection's first build: `bulk_build_bytes`,
        or with 0 half of `buffer_max_bytes`."""
        return self.bulk_build_bytes or max(1, self.buffer_max_bytes // 2)

    @property
    def spill_build_bytes(self) -> int:
        """Buffered vector bytes that start the first build of a collection whose buffer
        spills to files past `first_build_bytes` (0: it does not spill). Only with the auto
        `bulk_build_bytes` (0), and only when `rebuild_max_bytes` lies beyond that point.
        Also where a document collection's first codebook is trained while a load streams in
        (`doc_jobs.first_train_bytes`: its tokens are on file from the start)."""
        first = self.first_build_bytes
        return (
            self.rebuild_max_bytes
            if not self.bulk_build_bytes and self.rebuild_max_bytes > first
            else 0
        )

    @property
    def spill_from_bytes(self) -> int:
        """Buffered vector bytes held in memory before a spilling buffer (`spill_build_bytes`)
        opens its chunks on file: `first_build_bytes`, at most SPILL_FROM_BYTES."""
        return min(self.first_build_bytes, SPILL_FROM_BYTES)

    def spec(self) -> str:
        return "engine(" + ", ".join(f"{k}={v}" for k, v in asdict(self).items()) + ")"


_BOUNDS: dict[str, tuple[Any, Any, Any]] = {
    "bulk_build_bytes": (DEFAULT_BULK_BUILD_BYTES, MIN_BULK_BUILD_BYTES, MAX_BULK_BUILD_BYTES),
    "build_min_vectors": (
        DEFAULT_BUILD_MIN_VECTORS,
        MIN_BUILD_MIN_VECTORS,
        MAX_BUILD_MIN_VECTORS,
    ),
    "drain_vectors": (DEFAULT_DRAIN_VECTORS, MIN_DRAIN_VECTORS, MAX_DRAIN_VECTORS),
    "rebuild_max_bytes": (
        DEFAULT_REBUILD_MAX_BYTES,
        MIN_REBUILD_MAX_BYTES,
        MAX_REBUILD_MAX_BYTES,
    ),
    "idle_seconds": (DEFAULT_IDLE_SECONDS, MIN_IDLE_SECONDS, MAX_IDLE_SECONDS),
    "buffer_max_bytes": (DEFAULT_BUFFER_MAX_BYTES, MIN_BUFFER_MAX_BYTES, MAX_BUFFER_MAX_BYTES),
    "stall_timeout": (DEFAULT_STALL_TIMEOUT, MIN_STALL_TIMEOUT, MAX_STALL_TIMEOUT),
    "maintain_slice": (DEFAULT_MAINTAIN_SLICE, MIN_MAINTAIN_SLICE, MAX_MAINTAIN_SLICE),
    "apply_batch": (DEFAULT_APPLY_BATCH, MIN_APPLY_BATCH, MAX_APPLY_BATCH),
    "retry_seconds": (DEFAULT_RETRY_SECONDS, MIN_RETRY_SECONDS, MAX_RETRY_SECONDS),
}
