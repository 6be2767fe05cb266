"""The in-memory offset table of the posting file: which blocks make up each posting.

A posting is a chain of blocks (the one written by build, split or compaction, plus blocks
appended by inserts). The chains live in flat numpy arrays so numba kernels can walk them
without Python: `post_first[p]` is the first block of posting p (-1 if empty) and
`blk_next[b]` the next one. Freed block ids are reused. About 20 bytes per block and 12 per
posting. This module owns no file: the index persists the arrays in its state file.

A table attached to a posting file's `SpaceMap` (`PostingFile.attach`) hands every block it
stops referencing to the map (`clear` is the one way a block leaves a chain), tagged with
whether it was pushed in the current checkpoint epoch, so no caller can forget to release
space. Not thread-safe: mutated by the maintenance thread only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vecdb.index.spann.space import Extents, SpaceMap
from vecdb.kernels.posting import block_extent, block_extents

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


def _grow(a: npt.NDArray[np.generic], n: int, fill: int) -> npt.NDArray[np.generic]:
    if n <= len(a):
        return a
    out = np.full(max(n, 2 * len(a), 64), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


class BlockTable:
    """Per posting, a chain of (offset, count) blocks in the posting file."""

    dim: int  # vector dimension (block sizes derive from it)
    width: int  # bytes per stored component
    post_first: I32  # first block of each posting, -1 if the posting is empty
    post_blocks: I32  # number of blocks in each posting's chain
    post_entries: I32  # entries in the chain, stale and removed ones included
    blk_off: I64  # byte offset of each block in the posting file
    blk_cnt: I64  # entries in each block
    blk_next: I32  # next block of the same posting, -1 at the end
    blk_epoch: I32  # space-map epoch the block was pushed in (0: before the map was attached)
    free_ids: I32  # block ids free for reuse: a stack, its first `n_free` entries
    n_free: int
    used: int  # high-water mark of block ids
    ref_bytes: int  # bytes of all referenced blocks (the rest of the file is garbage)
    space: SpaceMap | None  # where dropped blocks are released (None: nowhere)
    full_cap: int  # entries of a full block (page-rounded extent), 0: none; set by attach

    def __init__(self, dim: int, width: int = 4, space: SpaceMap | None = None) -> None:
        self.dim, self.width = dim, width
        self.post_first = np.full(0, -1, dtype=np.int32)
        self.post_blocks = np.zeros(0, dtype=np.int32)
        self.post_entries = np.zeros(0, dtype=np.int32)
        self.blk_off = np.zeros(0, dtype=np.int64)
        self.blk_cnt = np.zeros(0, dtype=np.int64)
        self.blk_next = np.full(0, -1, dtype=np.int32)
        self.blk_epoch = np.zeros(0, dtype=np.int32)
        self.free_ids, self.n_free = np.zeros(0, dtype=np.int32), 0
        self.used, self.ref_bytes = 0, 0
        self.space = space
        self.full_cap = 0

    @property
    def n_postings(self) -> int:
        return len(self.post_first)

    def ensure(self, n_postings: int) -> None:
        """Make room for posting ids below `n_postings`."""
        if n_postings > len(self.post_first):
            self.post_first = _grow(self.post_first, n_postings, -1)  # type: ignore[assignment]
            self.post_blocks = _grow(self.post_blocks, n_postings, 0)  # type: ignore[assignment]
            self.post_entries = _grow(self.post_entries, n_postings, 0)  # type: ignore[assignment]

    def push(self, posting: int, offset: int, count: int) -> None:
        """Prepend a block to a posting's chain."""
        self.ensure(posting + 1)
        if self.n_free:
            self.n_free -= 1
            b = int(self.free_ids[self.n_free])
        else:
            b = self.used
            self.used += 1
            self.blk_off = _grow(self.blk_off, self.used, 0)  # type: ignore[assignment]
            self.blk_cnt = _grow(self.blk_cnt, self.used, 0)  # type: ignore[assignment]
            self.blk_next = _grow(self.blk_next, self.used, -1)  # type: ignore[assignment]
            self.blk_epoch = _grow(self.blk_epoch, self.used, 0)  # type: ignore[assignment]
        self.blk_off[b], self.blk_cnt[b] = offset, count
        self.blk_epoch[b] = 0 if self.space is None else self.space.epoch
        self.blk_next[b] = self.post_first[posting]
        self.post_first[posting] = b
        self.post_blocks[posting] += 1
        self.post_entries[posting] += count
        self.ref_bytes += block_extent(count, self.dim, self.width, self.full_cap)

    def chain(self, posting: int) -> list[tuple[int, int]]:
        """(offset, count) of each block of a posting."""
        out = []
        b = int(self.post_first[posting]) if posting < self.n_postings else -1
        while b >= 0:
            out.append((int(self.blk_off[b]), int(self.blk_cnt[b])))
            b = int(self.blk_next[b])
        return out

    def clear(self, posting: int) -> None:
        """Drop a posting's chain; its blocks are released to the space map."""
        b = int(self.post_first[posting])
        space = self.space
        while b >= 0:
            nbytes = block_extent(int(self.blk_cnt[b]), self.dim, self.width, self.full_cap)
            self.ref_bytes -= nbytes
            if space is not None:
                fresh = int(self.blk_epoch[b]) == space.epoch
                space.release(int(self.blk_off[b]), nbytes, fresh)
            self._free(b)
            nxt = int(self.blk_next[b])
            self.blk_next[b] = -1
            b = nxt
        self.post_first[posting] = -1
        self.post_blocks[posting] = 0
        self.post_entries[posting] = 0

    def _free(self, b: int) -> None:
        if self.n_free == len(self.free_ids):
            self.free_ids = _grow(self.free_ids, self.n_free + 1, -1)  # type: ignore[assignment]
        self.free_ids[self.n_free] = b
        self.n_free += 1

    @property
    def free(self) -> list[int]:
        """The block ids free for reuse (a copy; the next one taken is the last)."""
        out: list[int] = self.free_ids[: self.n_free].tolist()
        return out

    def extents(self) -> Extents:
        """Posting id, offset and extent size (bytes, rounded up to ALIGN) of every
        referenced block (first blocks of all chains, then second blocks, ...)."""
        nb = int(self.post_blocks.sum())
        post = np.empty(nb, dtype=np.int64)
        blk = np.empty(nb, dtype=np.int64)
        p = np.flatnonzero(self.post_first >= 0)
        b = self.post_first[p].astype(np.int64)
        t = 0
        while len(p):  # one vectorised step per chain position
            post[t : t + len(p)], blk[t : t + len(p)] = p, b
            t += len(p)
            b = self.blk_next[b].astype(np.int64)
            p, b = p[b >= 0], b[b >= 0]
        size = block_extents(self.blk_cnt[blk], self.dim, self.width, self.full_cap)
        return Extents(post, self.blk_off[blk].copy(), size)

    def set_full_cap(self, full_cap: int) -> None:
        """Use the file's full-block size from now on (recounts the referenced bytes)."""
        self.full_cap = full_cap
        self.ref_bytes = int(self.extents().size.sum())

    def chain_order(self) -> tuple[I64, I64]:
        """(posting, block id) of every referenced block, postings ascending and each
        posting's blocks in chain order; numpy only (a checkpoint runs this often, and Python
        tuples per block were megabytes of small objects each time)."""
        p = np.flatnonzero(self.post_first >= 0)
        b = self.post_first[p].astype(np.int64)
        posts, blks, steps = [], [], []
        t = 0
        while len(p):  # one vectorised step per chain position
            posts.append(p)
            blks.append(b)
            steps.append(np.full(len(p), t, np.int64))
            t += 1
            b = self.blk_next[b].astype(np.int64)
            p, b = p[b >= 0], b[b >= 0]
        if not posts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        post, blk, step = np.concatenate(posts), np.concatenate(blks), np.concatenate(steps)
        order = np.lexsort((step, post))
        return post[order], blk[order]

    def to_arrays(self) -> list[bytes]:
        """Sections for the state file: per-posting chains flattened in chain order."""
        counts = self.post_blocks.astype(np.int64)
        _, blk = self.chain_order()
        return [counts.tobytes(), self.blk_off[blk].tobytes(), self.blk_cnt[blk].tobytes()]

    @classmethod
    def from_arrays(cls, dim: int, sections: list[bytes], width: int = 4) -> BlockTable:
        counts = np.frombuffer(sections[0], dtype=np.int64)
        offs = np.frombuffer(sections[1], dtype=np.int64)
        cnts = np.frombuffer(sections[2], dtype=np.int64)
        table = cls(dim, width)
        table.ensure(len(counts))
        n = int(counts.sum())  # allocate the block arrays once, at their exact size
        table.blk_off = np.zeros(n, dtype=np.int64)
        table.blk_cnt = np.zeros(n, dtype=np.int64)
        table.blk_next = np.full(n, -1, dtype=np.int32)
        table.blk_epoch = np.zeros(n, dtype=np.int32)
        t = 0
        for p in np.flatnonzero(counts):
            # pushing prepends, so push in reverse to keep the stored chain order
            n = int(counts[p])
            for off, cnt in zip(offs[t : t + n][::-1], cnts[t : t + n][::-1], strict=True):
                table.push(int(p), int(off), int(cnt))
            t += n
        return table

    def memory_bytes(self) -> int:
        arrays = (self.post_first, self.post_blocks, self.post_entries, self.blk_off)
        blocks = (self.blk_cnt, self.blk_next, self.blk_epoch)
        return sum(a.nbytes for a in arrays + blocks)
