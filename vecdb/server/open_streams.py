"""A server's open streams of one kind: how many may be open, and the end of idle ones.

A stream holds a handler thread for as long as it is open, busy or not, so a server bounds
each kind (at most a share of `server.workers`, so unary calls always keep threads) and ends
one that has carried no message for a while: a reaper thread cancels it (the client sees
CANCELLED). Two kinds use it:
- SearchStream (single searches on one long-lived call, issue 12: it saves a unary call's
  set-up per query): `limits.max_search_streams`, at most half of the workers, ended after
  `limits.search_stream_idle_seconds` without a request; the SDK opens a new stream, or sends
  Search, at its next query.
- UpsertStream (batches with acknowledgements, `vecdb ingest`): `limits.max_upsert_streams`, at
  most a quarter of the workers, ended after `limits.upsert_stream_idle_seconds` waiting for a
  batch with every batch it received acknowledged. Before the bound, 16 clients whose batch
  source stalled held all 16 workers and every other call waited. The SDK sends the rest of
  its batches (those not acknowledged first) as Upsert calls.
At shutdown the idle streams are cancelled at once and busy ones end after their current
message: a SearchStream returns (`draining`), any other kind is cancelled here as soon as it
waits for its next message (`busy`; before, an UpsertStream busy at shutdown, or whose ack
was on its way, went on until the grace ran out). The guard (`vecdb.server.interceptors`)
marks a stream busy while it handles a message; this module only keeps the registry. Must
not import the engine.
"""

from __future__ import annotations

import threading
import time
from typing import Any

REAP_EVERY = 0.25  # seconds between two looks for idle streams (at most this late)


class OpenStreams:
    """Registry of the open streams of one kind by their call context."""

    def __init__(
        self, kind: str, limit: int, idle_seconds: float, *, ends_itself: bool = False
    ) -> None:
        self.kind = kind  # the method, for the reaper thread's name
        # the stream returns by itself at shutdown once its message is answered (a
        # SearchStream); else `busy` cancels it then
        self.ends_itself = ends_itself
        self.limit = limit  # streams that may be open at once (0: none)
        self.idle_seconds = idle_seconds  # a stream without a message this long is ended
        self._lock = threading.Lock()
        # context -> [monotonic time of its last message's end (or its start), busy, ended]
        self._open: dict[Any, list[Any]] = {}
        self._stop = threading.Event()  # set by close(): the reaper ends
        self._reaper: threading.Thread | None = None
        self.reaped = 0  # streams ended for idleness (for tests and the log)

    def enter(self, context: Any) -> bool:
        """Register a new stream; False when `limit` are open already (refuse it)."""
        with self._lock:
            if len(self._open) >= self.limit or self._stop.is_set():
                return False
            self._open[context] = [time.monotonic(), False, False]
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap, name=f"{self.kind}-reaper", daemon=True
                )
                self._reaper.start()
        return True

    def busy(self, context: Any, busy: bool) -> None:
        """Mark the stream as handling a message (True) or waiting for the next one."""
        entry = self._open.get(context)
        if entry is None:
            return
        entry[0] = time.monotonic()
        entry[1] = busy
        if not busy and self._stop.is_set() and not self.ends_itself:
            # shutting down: its message answered, the stream ends now (the reaper has
            # stopped, and a stream busy at close() would otherwise hold the whole grace)
            with self._lock:
                entry[2] = True
            context.cancel()

    def ended(self, context: Any) -> bool:
        """Whether this registry cancelled the stream (grpcio may end its requests as if the
        client had closed them, before it notices the cancellation)."""
        entry = self._open.get(context)
        return entry is not None and bool(entry[2])

    def leave(self, context: Any) -> None:
        with self._lock:
            self._open.pop(context, None)

    @property
    def count(self) -> int:
        return len(self._open)

    @property
    def full(self) -> bool:
        return len(self._open) >= self.limit

    def cancel_idle(self, older_than: float = 0.0) -> int:
        """Cancel every stream waiting for a message for more than `older_than` seconds;
        returns how many."""
        now = time.monotonic()
        with self._lock:
            idle = [
                c for c, (t, busy, _) in self._open.items() if not busy and now - t > older_than
            ]
            for context in idle:
                self._open[context][2] = True
        for context in idle:
            context.cancel()
        return len(idle)

    def close(self) -> None:
        """Stop the reaper and cancel every idle stream (shutdown)."""
        self._stop.set()
        self.cancel_idle()

    def _reap(self) -> None:
        while not self._stop.wait(REAP_EVERY):
            self.reaped += self.cancel_idle(self.idle_seconds)
