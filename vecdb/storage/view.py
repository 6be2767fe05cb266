"""`View`: the whole key-value store as it was at one instant (moved out of `kv`).

Owns nothing but the iterators of one view (`KV.view` makes it), `prefix_end` and the `Reader` protocol.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from rocksdict import ReadOptions

if TYPE_CHECKING:
    from vecdb.storage.kv import KV


class Reader(Protocol):
    """What reads need of a store: the live `KV` or a fixed `View` of it."""

    def get(self, cf: str, key: bytes) -> bytes | None: ...

    def multi_get(self, cf: str, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def scan_range(
        self, cf: str, start: bytes, end: bytes, fill_cache: bool = True
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def scan_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...


def prefix_end(prefix: bytes) -> bytes:
    """Smallest key greater than every key starting with `prefix`."""
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b"\xff" * (len(prefix) + 8)
    b[-1] += 1
    return bytes(b)


class View:
    """The whole store as it was at one instant: reads through a view never see a later
    commit, in any column family. Made by `KV.view`, which creates, while no commit can run,
    one RocksDB iterator per column family for scans and one for point reads: an iterator
    reads the state it was created at, however long it lives and wherever it seeks.
    (rocksdict's `Snapshot` isolates point reads only: `Snapshot.iter` reads the live column
    family, which is why views are built from iterators.) One scan per column family at a
    time; close a view promptly, since it pins memtables and table files."""

    def __init__(self, kv: KV) -> None:
        opts = ReadOptions()
        opts.fill_cache(False)  # type: ignore[call-arg]
        with kv._commit_lock:  # no commit between the first iterator and the last
            self.seq = int(kv._db.latest_sequence_number())  # RocksDB's sequence at the instant
            self._scan = {cf: fam.iter(opts) for cf, fam in kv._cfs.items()}
            self._probe = {cf: fam.iter(ReadOptions()) for cf, fam in kv._cfs.items()}
        self._busy: set[str] = set()  # families with a scan in progress

    def get(self, cf: str, key: bytes) -> bytes | None:
        it = self._probe[cf]
        it.seek(key)
        if it.valid() and bytes(it.key()) == key:
            return bytes(it.value())
        return None

    def multi_get(self, cf: str, keys: Sequence[bytes]) -> list[bytes | None]:
        return [self.get(cf, k) for k in keys]

    def scan_range(
        self, cf: str, start: bytes, end: bytes, fill_cache: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) for every key in [start, end) at the view's instant."""
        if cf in self._busy:
            raise RuntimeError(f"a scan of column family {cf!r} is already running on this view")
        self._busy.add(cf)
        try:
            it = self._scan[cf]
            it.seek(start)
            while it.valid():
                key = bytes(it.key())
                if key >= end:
                    return
                yield key, bytes(it.value())
                it.next()
        finally:
            self._busy.discard(cf)

    def scan_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.scan_range(cf, prefix, prefix_end(prefix))

    def close(self) -> None:
        self._scan.clear()
        self._probe.clear()

    def __enter__(self) -> View:
        return self

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
