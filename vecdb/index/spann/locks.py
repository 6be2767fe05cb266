"""The SPANN index's readers-writer lock: many searches at once, one publisher alone.

Owns nothing but the lock and the record of how long its write side was held (the longest
hold and the phase that held it, for stats and the "no maintenance step keeps a search
waiting more than about a second" bound). Writers are preferred so a stream of searches
cannot starve a publish. The same pattern as `vecdb.engine.locks` (the index may not import
the engine).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    """Readers-writer lock with writer preference and write-hold accounting."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards the counters below
        self._cond = threading.Condition(self._mutex)  # waits for them to change
        self._readers = 0  # readers inside
        self._writer = False  # a writer is inside
        self._waiting_writers = 0  # writers queued (they block new readers)
        self.longest_write_s = 0.0  # longest time the write side was held
        self.longest_write_phase = ""  # what held it then
        self.writes = 0  # write sections entered
        self._read_side = _ReadSide(self)  # what `read` returns (holds no per-call state)

    def read(self) -> _ReadSide:
        """The read side, a context manager (a small class, not a generator: every search
        enters it, and a generator's context manager cost ~2 us a call)."""
        return self._read_side

    def _enter_read(self) -> None:
        with self._mutex:  # no writer in or waiting (the usual case): in, without the
            if not (self._writer or self._waiting_writers):  # Condition's Python methods
                self._readers += 1
                return
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def _leave_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if self._readers == 0 and self._waiting_writers:  # only a writer waits for this
                self._cond.notify_all()  # (the Condition's lock is `_mutex`, held here)

    @contextmanager
    def write(self, phase: str = "") -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        start = time.perf_counter()
        try:
            yield
        finally:
            held = time.perf_counter() - start
            with self._cond:
                self.writes += 1
                if held > self.longest_write_s:
                    self.longest_write_s, self.longest_write_phase = held, phase
                self._writer = False
                self._cond.notify_all()


class _ReadSide:
    """`RWLock.read()`: one reader in on entry, out on exit (exceptions propagate)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._enter_read()

    def __exit__(self, *exc: object) -> None:
        self._lock._leave_read()
