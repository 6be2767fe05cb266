"""The immutable snapshot of a multi-vector index that searches read.

This module owns the in-memory layout: documents are numbered 0..D-1 in the order they were
added (the engine's slot of each in `slots`), their raw tokens are the rows
`raw_off[i]:raw_off[i + 1]` of the raw store and their encoded (pooled / pruned) tokens the
rows `enc_off[i]:enc_off[i + 1]` of the packed code stream, the residual and sign rows and the
rerank tier. The IVF is a CSR from centroid to the sorted unique documents with a token in
that cell, plus a small `delta` of (cell, document) pairs added since the CSR was built. A
mutation builds a new `View` and swaps it in; only `alive` is written in place (a removal
clears a flag, which a concurrent search may or may not see: either is consistent). Also the
CSR construction. No I/O.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.index.base import Visible
from vecdb.index.multivector.codec import Codec
from vecdb.kernels.bitpack import code_bits
from vecdb.kernels.unique import sorted_unique

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
BOOL = npt.NDArray[np.bool_]

DELTA_REBUILD = 0.25  # rebuild the CSR when the delta exceeds this share of its entries
# ... and at a checkpoint (writes paused, or optimize) when it holds at least this many pairs:
# every probing search looks its probed cells up in the whole delta and takes what it finds
# past the probe-score cut. A 10,060,821-token load trained at 4.2M tokens kept 185,251
# pairs there (the rest of the load): 1.4 ms a query of the lookup alone, p50 6.8-6.9 against
# 4.8-5.1 ms for the same load trained at optimize, at the same candidates and work;
# 16,384 pairs cost ~0.1 ms. A fold re-sorts every pair (0.03 s at 1.66M pairs).
DELTA_FOLD_MIN = 16_384


@dataclass(frozen=True)
class View:
    """One consistent state of the index."""

    slots: I64  # (D,) engine slot of each document
    raw_off: I64  # (D+1,) raw token ranges
    alive: BOOL  # (D,) live flags (cleared in place by remove)
    raw_tokens: int  # rows of the raw store this view covers
    codec: Codec | None  # None until the first training
    enc_off: I64  # (D+1,) encoded token ranges (empty for documents not encoded)
    codes: U8  # packed code stream of the encoded tokens
    residuals: U8  # (N_enc, P) packed residual codes
    signs: U8  # (N_enc, S) sign bits
    indptr: I64  # (K+1,) CSR of cell -> documents
    cell_docs: npt.NDArray[np.integer]  # the CSR's documents (int32 while they fit)
    delta_cells: I64  # pairs added since the CSR was built: cell ...
    delta_docs: I64  # ... and document
    raw: Any  # the raw float32 row store (`rowfile.RowFile` or `rowfile.MemRows`)
    tier: Any  # the rerank-tier row store, or None

    @property
    def docs(self) -> int:
        return len(self.slots)

    @property
    def encoded_tokens(self) -> int:
        return int(self.enc_off[-1])

    @property
    def bits(self) -> int:
        return code_bits(self.codec.k) if self.codec is not None else 0


def empty_view(raw: Any) -> View:
    z = np.zeros(0, np.int64)
    return View(
        slots=z,
        raw_off=np.zeros(1, np.int64),
        alive=np.zeros(0, bool),
        raw_tokens=0,
        codec=None,
        enc_off=np.zeros(1, np.int64),
        codes=np.zeros(2, np.uint8),
        residuals=np.zeros((0, 0), np.uint8),
        signs=np.zeros((0, 0), np.uint8),
        indptr=np.zeros(1, np.int64),
        cell_docs=z,
        delta_cells=z,
        delta_docs=z,
        raw=raw,
        tier=None,
    )


def grow(arr: npt.NDArray[Any], used: int, extra: int) -> npt.NDArray[Any]:
    """`arr` if it has room for `extra` more rows after `used`, else a copy of its used rows
    with twice the room. Rows past `used` are never read by a view that does not count them,
    so appending in place is safe for concurrent searches."""
    need = used + extra
    if len(arr) >= need:
        return arr
    out = np.zeros((max(need, 2 * len(arr), 1024), *arr.shape[1:]), arr.dtype)
    out[:used] = arr[:used]
    return out


def cell_pairs(codes: I64, enc_off: I64, first_doc: int = 0) -> tuple[I64, I64]:
    """Unique (cell, document) pairs of encoded tokens, sorted by cell then document."""
    doc = np.repeat(np.arange(len(enc_off) - 1, dtype=np.int64) + first_doc, np.diff(enc_off))
    if len(codes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key = sorted_unique(codes.astype(np.int64) * (1 << 32) + doc)
    return key >> 32, key & ((1 << 32) - 1)


def csr(cells: I64, docs: I64, k: int) -> tuple[I64, npt.NDArray[np.integer]]:
    """CSR (indptr (k+1,), documents) of (cell, document) pairs sorted by cell; the documents
    are int32 (half the postings' bytes) unless a number needs more."""
    indptr = np.zeros(k + 1, np.int64)
    np.cumsum(np.bincount(cells, minlength=k), out=indptr[1:])
    wide = len(docs) > 0 and int(docs.max()) > np.iinfo(np.int32).max
    return indptr, docs.astype(np.int64 if wide else np.int32)


def with_docs(v: View, slots: I64, offs: I64, alive: npt.NDArray[np.bool_]) -> View:
    """`v` with documents appended to its table (their raw rows, by `offs`, follow its last
    ones in the raw store), not encoded yet."""
    return replace(
        v,
        slots=np.concatenate([v.slots, slots]),
        raw_off=np.concatenate([v.raw_off, offs[1:] + v.raw_off[-1]]),
        alive=np.concatenate([v.alive, alive]),
        raw_tokens=v.raw_tokens + int(offs[-1]),
        enc_off=np.concatenate([v.enc_off, np.full(len(slots), v.enc_off[-1])]),
    )


def with_delta(v: View, cells: I64, docs: I64) -> View:
    """`v` with more (cell, document) pairs; folds everything into the CSR when the delta
    grows past DELTA_REBUILD of it."""
    dc = np.concatenate([v.delta_cells, cells])
    dd = np.concatenate([v.delta_docs, docs])
    nv = replace(v, delta_cells=dc, delta_docs=dd)
    return nv if len(dc) <= DELTA_REBUILD * max(1, len(v.cell_docs)) else folded(nv)


def folded(v: View, at_least: int = 0) -> View:
    """`v` with its delta folded into the CSR, when it holds at least `at_least` pairs (and
    the view has a codec); else `v` itself."""
    dc, dd = v.delta_cells, v.delta_docs
    if not len(dc) or len(dc) < at_least or v.codec is None:
        return v
    starts = v.indptr[:-1]
    base_cells = np.repeat(np.arange(len(starts), dtype=np.int64), np.diff(v.indptr))
    key = sorted_unique(
        np.concatenate([base_cells, dc]) * (1 << 32) + np.concatenate([v.cell_docs, dd])
    )
    indptr, cell_docs = csr(key >> 32, key & ((1 << 32) - 1), v.codec.k)
    z = np.zeros(0, np.int64)
    return replace(v, indptr=indptr, cell_docs=cell_docs, delta_cells=z, delta_docs=z)


MEMBERSHIP_CACHE = 16  # (bitmap, view) pairs whose per-document membership is kept
CELL_LISTS_MAX_SHARE = 0.25  # lists are made for a bitmap of at most this share of documents
SEEN_PAIRS = 1024  # (bitmap, CSR) pairs remembered as searched once (weakly: no memory held)


@dataclass(frozen=True)
class CellLists:
    """The IVF of one bitmap's documents (Curator's per-tenant lists): a CSR from cell to
    the bitmap's documents with a token there (a sub-list of the view's), and the cells
    holding any. A tenant's probe walks these instead of the shared lists, where its
    documents are a few among everyone's (a 3 % tenant of 20,000 documents probed ~120
    cells a token through the shared lists to find its 96 candidates)."""

    indptr: I64
    cell_docs: npt.NDArray[np.integer]
    used: BOOL  # (K,) the cells with at least one of the documents
    cells: int  # how many cells that is

    @property
    def entries(self) -> int:
        """Its size in CSR entries (documents and cell pointers), for the cache's budget."""
        return len(self.cell_docs) + len(self.indptr)


def cell_lists(v: View, member: BOOL) -> CellLists:
    """The view's CSR restricted to the documents flagged in `member` (one per document;
    deleted ones included: searches check `alive` as they gather)."""
    sel = member[v.cell_docs]
    upto = np.zeros(len(sel) + 1, np.int64)
    np.cumsum(sel, out=upto[1:])
    counts = upto[v.indptr[1:]] - upto[v.indptr[:-1]]
    indptr = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    used = counts > 0
    return CellLists(indptr, v.cell_docs[sel], used, int(np.count_nonzero(used)))


class MembershipCache:
    """Which documents of a view a `Visible` bitmap holds, kept for the last few (bitmap,
    view) pairs: a tenant's bitmap is one object while its set is unchanged (the tenant
    layer caches it), and a view's `slots` never change (a write makes a new view), so the
    O(documents) lookup is done once per pair instead of once per query. `alive` changes in
    place on a delete, so it is applied per query. Also a bitmap's own cell lists (`lists`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: OrderedDict[tuple[int, int], tuple[Visible, I64, BOOL]] = OrderedDict()
        self._lists: OrderedDict[tuple[int, int], tuple[Visible, Any, CellLists | None]] = (
            OrderedDict())  # fmt: skip
        self._seen: OrderedDict[tuple[int, int], tuple[Any, Any]] = OrderedDict()

    def lists(self, visible: Visible, v: View) -> CellLists | None:
        """The bitmap's own cell lists over the view's CSR (`cell_lists`), kept per (bitmap,
        CSR): a CSR is replaced, never changed, and documents added since it was built are
        in the view's delta, which searches read apart. Made on the second probing search
        of a pair, not the first: making them reads the whole CSR (3.4 ms for its 321,445
        entries at 20,000 documents), which a tenant written between every two searches (a
        new bitmap each time) would pay per search. Lists are kept, least recently used
        first out, while together they hold no more entries than the CSR itself (a 3 %
        tenant's are about 3 % of it, so dozens of small tenants fit). None for the first
        search of a pair, a bitmap holding more than CELL_LISTS_MAX_SHARE of the documents
        (the shared lists are mostly its own) or an untrained index."""
        if v.codec is None:
            return None
        key = (id(visible), id(v.cell_docs))
        with self._lock:
            hit = self._lists.get(key)
            if hit is not None and hit[0] is visible and hit[1] is v.cell_docs:
                self._lists.move_to_end(key)
                return hit[2]
            seen = self._seen.pop(key, None)
            if seen is None or seen[0]() is not visible or seen[1]() is not v.cell_docs:
                # first seen: remembered weakly; the shared lists serve this search
                self._seen[key] = (weakref.ref(visible), weakref.ref(v.cell_docs))
                while len(self._seen) > SEEN_PAIRS:
                    self._seen.popitem(last=False)
                return None
        member = self.member(visible, v.slots)
        small = np.count_nonzero(member) <= CELL_LISTS_MAX_SHARE * len(member)
        got = cell_lists(v, member) if small else None
        with self._lock:
            self._lists[key] = (visible, v.cell_docs, got)  # holding both: ids stay unique
            budget = len(v.cell_docs) + len(v.indptr)
            while len(self._lists) > 1 and sum(
                c.entries for _, _, c in self._lists.values() if c is not None
            ) > budget:  # fmt: skip
                self._lists.popitem(last=False)
        return got

    def member(self, visible: Visible, slots: I64) -> BOOL:
        key = (id(visible), id(slots))
        with self._lock:
            hit = self._hits.get(key)
            if hit is not None and hit[0] is visible and hit[1] is slots:
                self._hits.move_to_end(key)
                return hit[2]
        mask = visible.contains(slots)
        with self._lock:
            self._hits[key] = (visible, slots, mask)  # holding both keeps their ids unique
            while len(self._hits) > MEMBERSHIP_CACHE:
                self._hits.popitem(last=False)
        return mask


def visible_mask(
    v: View, visible: Visible | npt.ArrayLike | None, cache: MembershipCache | None = None
) -> BOOL:
    """Live documents, restricted to the given slots when `visible` is not None: a `Visible`
    bitmap (looked up per document, through `cache` if given), a boolean mask over slots (a
    filter's matches: indexed per document; slots past its end are outside), or an array of
    slots."""
    alive = v.alive.copy()
    if isinstance(visible, Visible):
        alive &= visible.contains(v.slots) if cache is None else cache.member(visible, v.slots)
    elif isinstance(visible, np.ndarray) and visible.dtype == np.bool_:
        inside = v.slots < len(visible)
        inside[inside] = visible[v.slots[inside]]
        alive &= inside
    elif visible is not None:
        alive &= np.isin(v.slots, np.asarray(visible, np.int64))
    return alive
