"""Waiting out a full write buffer, as bulk loaders do.

A collection's writes wait in an exact buffer until the background worker indexes them; a
writer faster than the index build finds the buffer at its cap, waits the engine's
`stall_timeout` (30 s by default) and is refused with `ResourceExhausted`, reason
`BUFFER_FULL`, nothing of its batch stored. A refusal of one call is right for an
application's write (it should hear that the database is behind); a bulk load should wait
for the index instead and go on. `Patience` is that rule: retry after the error's
`retry_after` while some write went through in the last `seconds` (the clock restarts at
each one), so a load that makes progress never fails for backpressure, and one stuck behind
a build that does not end gives up with the refusal. `vecdb ingest` and the benchmarks load
through it. Any other error, `ResourceExhausted` of another reason (a quota, a full disk)
included, is raised at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeGuard

from vecdb.errors import BUFFER_FULL, ResourceExhausted
from vecdb.rpc.status import retry_delay

DEFAULT_PATIENCE = 900.0  # seconds without a write going through before a loader gives up
DEFAULT_PAUSE = 1.0  # seconds between tries when the error names none


def buffer_full(exc: BaseException) -> TypeGuard[ResourceExhausted]:
    """True for a write refused because its collection's write buffer is full."""
    return isinstance(exc, ResourceExhausted) and exc.reason == BUFFER_FULL


class Patience:
    """How long a loader waits out full buffers: `seconds` since the last write that went
    through (or since it was made). `waits` and `waited` count the pauses taken."""

    def __init__(
        self,
        seconds: float = DEFAULT_PATIENCE,
        *,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.waits = 0  # pauses taken
        self.waited = 0.0  # seconds paused in all
        self._sleep = sleep
        self._clock = clock
        self._since = clock()
        self._waiting = False  # a pause was taken since the last write went through

    def progressed(self) -> bool:
        """A write went through: the clock starts again. True if it went through after a
        wait (the first since one)."""
        self._since = self._clock()
        waited, self._waiting = self._waiting, False
        return waited

    def wait(self, exc: BaseException) -> None:
        """Pause before retrying the write that raised `exc`, or raise `exc` when it is not a
        full buffer or the patience is spent."""
        if not buffer_full(exc):
            raise exc
        left = self.seconds - (self._clock() - self._since)
        if left <= 0:
            raise exc
        pause = min(retry_delay(exc, DEFAULT_PAUSE) or DEFAULT_PAUSE, left)
        self._sleep(pause)
        self._waiting = True
        self.waits += 1
        self.waited += pause


def upsert_patiently(
    client: Any, name: str, *args: Any, patience: Patience | None = None, **kwargs: Any
) -> int:
    """`client.upsert(name, *args, **kwargs)`, retried while the collection's write buffer
    is full, within `patience` (a new `Patience()` when None). An upsert is idempotent, and
    a refused one stores nothing, so a retry never writes twice."""
    patience = patience or Patience()
    while True:
        try:
            n = int(client.upsert(name, *args, **kwargs))
        except ResourceExhausted as exc:
            patience.wait(exc)
            continue
        patience.progressed()
        return n
