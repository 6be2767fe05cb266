"""The open SearchStreams of a server: how many may be open, and the end of idle ones.

A SearchStream (one long-lived call carrying single searches, issue 12: it saves a unary
call's set-up per query) holds a handler thread for as long as it is open, busy or not. So a
server bounds them (`limits.max_search_streams`, at most half of `server.workers`, so unary
calls always keep threads) and ends a stream that has carried no request for
`limits.search_stream_idle_seconds`: a reaper thread cancels it (the client sees CANCELLED and
its SDK opens a new stream, or takes Search, at its next query). At shutdown the idle streams
are cancelled at once and busy ones end after their current request (`draining`). The guard
(`vecdb.server.interceptors`) runs each request of a stream as a Search; this module only
keeps the registry. Must not import the engine.
"""

from __future__ import annotations

import threading
import time
from typing import Any

REAP_EVERY = 0.25  # seconds between two looks for idle streams (at most this late)


class SearchStreams:
    """Registry of the open SearchStreams by their call context."""

    def __init__(self, limit: int, idle_seconds: float) -> None:
        self.limit = limit  # streams that may be open at once (0: none)
        self.idle_seconds = idle_seconds  # a stream without a request this long is ended
        self._lock = threading.Lock()
        # context -> [monotonic time of its last request's end (or its start), busy]
        self._open: dict[Any, list[Any]] = {}
        self._stop = threading.Event()  # set by close(): the reaper ends
        self._reaper: threading.Thread | None = None
        self.reaped = 0  # streams ended for idleness (for tests and the log)

    def enter(self, context: Any) -> bool:
        """Register a new stream; False when `limit` are open already (refuse it)."""
        with self._lock:
            if len(self._open) >= self.limit or self._stop.is_set():
                return False
            self._open[context] = [time.monotonic(), False]
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap, name="search-stream-reaper", daemon=True
                )
                self._reaper.start()
        return True

    def busy(self, context: Any, busy: bool) -> None:
        """Mark the stream as answering a request (True) or waiting for the next one."""
        entry = self._open.get(context)
        if entry is not None:
            entry[0] = time.monotonic()
            entry[1] = busy

    def leave(self, context: Any) -> None:
        with self._lock:
            self._open.pop(context, None)

    @property
    def count(self) -> int:
        return len(self._open)

    def cancel_idle(self, older_than: float = 0.0) -> int:
        """Cancel every stream waiting for a request for more than `older_than` seconds;
        returns how many."""
        now = time.monotonic()
        with self._lock:
            idle = [c for c, (t, busy) in self._open.items() if not busy and now - t > older_than]
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
