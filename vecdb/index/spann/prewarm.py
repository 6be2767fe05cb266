"""The CRC check of a warm posting file's blocks, in the background, after it is opened.

A warm search checks each block's CRC the first time it reads it and remembers the result
(`blockcheck.Verified`); the one-kernel single-query path (`single`) cannot hash, so a query
meeting a block not yet checked runs the ordinary path instead, and after an open every
block is such a block. Measured on GloVe-50 (200,000 vectors, int8 postings, a `vecdb serve`
child just opened): 0.37 ms a query in the server's handler thread over the first pass of
1,000 queries, 0.16 ms once their blocks were checked. `Prewarm` runs that check over the
whole file once, in a daemon thread, right after the index is opened, bulk-built, compacted
or handed a drain child's file, so the first queries after a restart take the fast path too.

One step checks the blocks of STEP_POSTINGS postings under the state's read lock (under a
megabyte at GloVe-50's posting size, a few at MiniLM-384's "bits" postings: about a
millisecond of hashing from the page cache, so a writer waits about as long as for a
search; longer where the pages come from the device); postings
written meanwhile are left to the searches, as blocks rewritten later are. A file larger than
MAX_BYTES is left to the searches (hashing it would read it all from the device); so is a
cold reader (every cold read is checked anyway) and a CRC mode other than "cached". A block
failing its check is logged and left unmarked: the first search that reads it fails the
same check and the engine quarantines the index, as without this pass.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from vecdb.errors import FormatError
from vecdb.index.params import PAGE_SIZE
from vecdb.index.spann import blockcheck
from vecdb.index.spann.postings import MmapReader
from vecdb.index.spann.state import SpannState
from vecdb.kernels.posting import gather_blocks

log = logging.getLogger("vecdb.index.spann")

MAX_BYTES = 1 << 30  # posting files up to this size are checked whole after an open
STEP_POSTINGS = 64  # postings whose blocks one read-lock hold checks


class Prewarm:
    """At most one background pass over an index's posting file at a time."""

    def __init__(self) -> None:
        self._step = threading.Lock()  # held by a running step (taken inside the read lock)
        self._stop: threading.Event | None = None  # the running pass's, if any
        self._thread: threading.Thread | None = None
        self.passes = 0  # passes started (tests and tools: whether a start made one)

    def start(self, st: SpannState) -> None:
        """Stop a running pass and start one over the state's current file, if it is warm,
        at most MAX_BYTES and the CRC mode is "cached" (else nothing to do)."""
        self.stop()
        if blockcheck.MODE != "cached" or not isinstance(st.reader, MmapReader):
            return
        if st.graph is None or st.file.length > MAX_BYTES:
            return
        stop = threading.Event()
        self._stop = stop
        self.passes += 1
        self._thread = threading.Thread(
            target=self._run, args=(st, stop), name="vecdb-spann-prewarm", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the running pass to end, and return once no step of it runs: after this the
        file may be closed. Safe while holding the state's write lock (a step runs inside
        the read lock, so none is running then; the pass ends at its next step)."""
        if self._stop is not None:
            self._stop.set()
        with self._step:
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the pass to end (tests, tools); whether none is running now."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _run(self, st: SpannState, stop: threading.Event) -> None:
        first, checked = 0, 0
        try:
            while first >= 0:
                with st.lock.read(), self._step:
                    if stop.is_set():
                        return
                    first, n = check_step(st, first)
                    checked += n
        except FormatError as exc:
            log.warning(
                "a posting block failed its CRC in the background check; the first search "
                "that reads it will quarantine the index",
                extra={"error": exc.message},
            )
        except Exception:  # never let the pass take a process down: searches still check
            log.exception("background check of the posting file stopped")
        else:
            log.debug("posting file checked", extra={"blocks": checked})


def check_step(st: SpannState, first: int) -> tuple[int, int]:
    """CRC-check (and remember) the blocks of postings first .. first + STEP_POSTINGS - 1
    not checked since their last write; returns the next posting to start from (-1: done)
    and the blocks read. Call under the state's read lock, with a warm reader."""
    reader = st.reader
    t = st.table
    npost = len(t.post_first)
    if first >= npost or not isinstance(reader, MmapReader):
        return -1, 0
    last = min(npost, first + STEP_POSTINGS)
    dim = st.bdim if st.is_bits else st.dim
    sel = np.arange(first, last, dtype=np.int64).reshape(1, -1)
    _, off, cnt, nbytes, _, _ = gather_blocks(
        sel, t.post_first, t.blk_next, t.blk_off, t.blk_cnt, dim, st.width, PAGE_SIZE
    )
    u8 = reader.views()[0]
    blockcheck.check_blocks(
        u8, off, cnt, dim, st.width, st.file.path, None, st.file.verified, nbytes
    )
    return (last if last < npost else -1), len(off)
