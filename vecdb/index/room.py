"""Room on the disk for an index job, checked before the job writes anything.

A bulk build or a codebook training writes its new files beside the current ones. On a disk
without room for them such a job used to fail part-way, after its partial file had taken the
space the database's own writes need (RocksDB's commits are refused below a 16 MiB reserve,
`storage.faults`): writes were refused until the file was removed, and each retry of the job
filled the disk again. So a job first bounds the bytes it will write (its own arithmetic:
`spann.build.build_need`, `multivector.training.train_need`) and `ensure` refuses it with
`DiskFull` when the disk has less free than that plus HEADROOM. Nothing is written then: the
worker retries the job after its pause (`retry_seconds`), each retry one statvfs until there
is room, and the points it would index stay searchable meanwhile (exactly, from the write
buffer or the untrained documents). Owns that rule; the probe is `vecdb.diskspace`'s.
"""

from __future__ import annotations

from pathlib import Path

from vecdb import diskspace
from vecdb.errors import DiskFull

MIB = 1 << 20
HEADROOM = 32 * MIB  # free space an index job must leave: twice RocksDB's write reserve


def free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the disk of `directory` (None if the
    file system cannot say): `vecdb.diskspace`'s probe, here so that tests can stand in for
    a full disk under the index layer alone."""
    try:
        return diskspace.free_bytes(directory)
    except OSError:
        return None


def fits(directory: Path | None, need: int) -> bool:
    """Whether the disk of `directory` has `need` + HEADROOM bytes free (no directory, or a
    file system that cannot say: True; a job is not held back on a guess)."""
    return _short(directory, need) is None


def ensure(directory: Path | None, need: int, what: str, hint: str = "") -> None:
    """Raise `DiskFull` unless `fits(directory, need)` (no directory: an index in memory,
    nothing to check). `what` names the job, `hint` says what else would let it fit."""
    free = _short(directory, need)
    if free is None:
        return
    raise DiskFull(
        f"{what} needs about {_mib(need)} MiB on the disk of {directory}, which has "
        f"{_mib(free)} MiB free ({HEADROOM // MIB} MiB must stay free for writes): not started, "
        f"retried until the disk has room{hint}",
        need=need,
    )


def _short(directory: Path | None, need: int) -> int | None:
    """The disk's free bytes when they are fewer than `need` + HEADROOM, else None (one
    probe for both the answer and the message)."""
    free = None if directory is None or need <= 0 else free_bytes(directory)
    return free if free is not None and free < need + HEADROOM else None


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f}" if n >= 10 * MIB else f"{n / MIB:.1f}"
