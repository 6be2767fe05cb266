"""The compact head graph: SPANN's heads in an HNSW graph of our own arrays.

Owns the head vectors, in the form `BuildParams.head_dtype` names (rounded once when a head
arrives): int8 codes with a float32 scale per head (the default: a component in one byte,
whatever the vectors' range), float16 (for indexes whose vectors fit float16's range) or
float32; and hnswlib's graph over them, in about a third of hnswlib's resident memory: per
head 1-2 bytes a component, M0 level-0 links in uint16 (int32 once the graph passes 65,535
nodes), a count, a label and a deleted flag, where hnswlib holds float32 vectors, int32 links,
an 8-byte label, a hash-map node and a 40-byte mutex per element plus a fixed 2.5 MiB table of
65,536 label mutexes (measured on GloVe-50's 17,554 heads: hnswlib 8.9 MiB, this graph 3.1 MiB
with float16 vectors). The graph is built by hnswlib (`from_hnswlib` parses its `save_index`
bytes; hnswlib then goes away) and grows online by hnswlib's level-0 insert
(`kernels.headgraph.insert`); removed heads are marked deleted and keep routing, as in
hnswlib, until a rebuild drops them. The interface is the subset of `hnswlib.Index` SPANN uses
(`knn_query`, `get_items`, `add_items`, `mark_deleted`, counts, `resize_index`), so the phases
need not know which one they hold. Locking is the owner's: `add_items` / `mark_deleted` /
`resize_index` under the write lock, reads under the read lock (or on the only thread that
writes). `to_sections` / `from_sections` give the raw little-endian arrays the owner frames
into `heads.<n>.bin`."""

from __future__ import annotations

import struct
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.params import HEAD_DTYPES
from vecdb.index.spann.fanout import run_phases
from vecdb.kernels import headgraph as kern
from vecdb.kernels.half import half_bits

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U16 = npt.NDArray[np.uint16]
I32 = npt.NDArray[np.int32]
NARROW_NODES = 65_535  # up to this many nodes the level-0 links fit uint16
PARALLEL_CHUNK = 16  # queries per task of a threaded batch search
# hnswlib's saveIndex header (hnswalg.h): offsetLevel0, max_elements, cur_element_count,
# size_data_per_element, label_offset, offsetData (size_t), maxlevel (int), enterpoint (uint),
# maxM, maxM0, M (size_t), mult (double), ef_construction (size_t).
HNSW_HEADER = struct.Struct("<6QiI3QdQ")
INT8_MAX = 127  # a head's largest component is stored as +-127 (its scale: max |x| / 127)


_FILE_TYPE = {"int8": "i1", "float16": "<u2", "float32": "<f4"}  # a vector's file form


def to_int8(x: F32) -> tuple[npt.NDArray[np.int8], F32]:
    """float32 rows as int8 codes and a scale per row (max |x| / 127; a zero row scale 0):
    row i is about scale[i] * codes[i], each component within scale[i] / 2."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    top = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x), np.float32)
    scale = (top / np.float32(INT8_MAX)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    codes = np.clip(np.rint(x / safe[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return codes, scale


class HeadGraph:
    """See the module docstring. Node = internal id (0..n-1, insertion order); label = the
    caller's id (a posting id)."""

    space: str  # "l2" (squared L2) | "ip" (1 - dot), as hnswlib
    dim: int  # vector dimension
    m: int  # links a new node keeps (hnswlib M)
    ef_construction: int  # beam width of an insert
    n: int  # nodes in use (deleted ones included)
    dtype: str  # how vectors are stored: int8 | float16 | float32 (HEAD_DTYPES)
    vecs: npt.NDArray[Any]  # (cap, dim) each node's vector: int8 codes, float16 bits, float32
    scale: F32  # (cap,) int8: node v's vector is scale[v] * vecs[v]; (0,) otherwise
    links: npt.NDArray[Any]  # (cap, M0) level-0 neighbours (uint16 or int32)
    nlinks: npt.NDArray[np.uint8]  # (cap,) level-0 neighbour counts
    labels: npt.NDArray[np.int32]  # (cap,) node -> label
    deleted: npt.NDArray[np.bool_]  # (cap,) node marked deleted
    node_of: npt.NDArray[np.int32]  # label -> node, -1 where none
    up_off: npt.NDArray[np.int32]  # (cap,) first row of a node's upper levels, -1 if level 0
    up_links: npt.NDArray[np.int32]  # (rows, maxM) upper-level neighbours
    up_cnt: npt.NDArray[np.uint8]  # (rows,) their counts
    entry: int  # entry node (-1 while empty)
    maxlevel: int  # the entry's level
    n_deleted: int  # nodes marked deleted

    def __init__(
        self, space: str, dim: int, m: int, ef_construction: int, m0: int, dtype: str = "int8"
    ) -> None:
        if dtype not in HEAD_DTYPES:
            raise ValueError(f"head graph: dtype {dtype!r} is not one of {HEAD_DTYPES}")
        self.space, self.dim, self.m, self.ef_construction = space, dim, m, ef_construction
        self.n = 0
        self.dtype = dtype
        store = {"int8": np.int8, "float16": np.uint16, "float32": np.float32}[dtype]
        self.vecs = np.zeros((0, dim), store)
        self.scale = np.zeros(0, np.float32)
        self.links = np.zeros((0, m0), np.uint16)
        self.nlinks = np.zeros(0, np.uint8)
        self.labels = np.zeros(0, np.int32)
        self.deleted = np.zeros(0, np.bool_)
        self.node_of = np.zeros(0, np.int32)
        self.up_off = np.zeros(0, np.int32)
        self.up_links = np.zeros((0, m), np.int32)
        self.up_cnt = np.zeros(0, np.uint8)
        self.entry, self.maxlevel, self.n_deleted = -1, 0, 0
        self._scratch = threading.local()

    def scratch(self) -> tuple[U16, I64, F32, I32]:
        """This thread's scratch for the graph kernels, as long as the graph's capacity:
        visit marks (uint16, 2 bytes a node, zeroed once per 65,535 searches instead of per
        call), the last mark used, and the beam's list (8 bytes a node, touched only as far
        as a beam reaches). Per thread because searches run on several at once (a
        server's handlers, a batch's chunks); each keeps its scratch for the graph's life."""
        got: tuple[U16, I64, F32, I32] | None = getattr(self._scratch, "arrays", None)
        cap = len(self.nlinks)
        if got is None or len(got[0]) < max(cap, self.n):
            size = max(cap, self.n)
            got = (
                np.zeros(size, np.uint16),
                np.zeros(1, np.int64),
                np.empty(size + 1, np.float32),
                np.empty(size + 1, np.int32),
            )
            self._scratch.arrays = got
        return got

    # --- build -----------------------------------------------------------------------------

    @property
    def kernel_vecs(self) -> Any:
        """The vectors as the kernels take them: the rows, or for int8 (codes, scales)."""
        return (self.vecs, self.scale) if self.dtype == "int8" else self.vecs

    @classmethod
    def from_hnswlib(
        cls, raw: bytes, space: str, dim: int, ef_construction: int, dtype: str = "int8"
    ) -> HeadGraph:
        """The graph of an hnswlib `save_index` file (its bytes), sized exactly."""
        if len(raw) < HNSW_HEADER.size:
            raise FormatError(f"hnswlib graph: {len(raw)} bytes, shorter than its header")
        (off0, _, n, per, label_off, data_off, maxlevel, entry, max_m, max_m0, m, _, _) = (
            HNSW_HEADER.unpack_from(raw, 0)
        )
        if off0 != 0 or data_off != 4 + 4 * max_m0 or per != data_off + 4 * dim + 8:
            raise FormatError(f"hnswlib graph: layout does not match dim {dim}")
        g = cls(space, dim, int(m), ef_construction, int(max_m0), dtype)
        g.resize_index(int(n), exact=True)
        pos = HNSW_HEADER.size
        level0 = np.frombuffer(raw, np.uint8, n * per, pos).reshape(n, per)
        pos += n * per
        head = level0[:, :4].copy().view("<u4")[:, 0]
        g.nlinks[:n] = (head & 0xFFFF).astype(np.uint8)
        g.deleted[:n] = ((head >> 16) & 0xFF) & 1 == 1
        g.links[:n] = level0[:, 4:data_off].copy().view("<u4").reshape(n, max_m0)
        vec = level0[:, data_off : data_off + 4 * dim].copy().view("<f4").reshape(n, dim)
        g._store(0, vec)
        g.labels[:n] = level0[:, label_off : label_off + 8].copy().view("<u8")[:, 0]
        rows: list[npt.NDArray[np.uint32]] = []
        nrows = 0
        per_level = 4 + 4 * max_m
        for v in range(n):  # upper levels: a uint32 byte count, then each level's list
            (size,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            if size:
                levels = size // per_level
                block = np.frombuffer(raw, "<u4", size // 4, pos).reshape(levels, 1 + max_m)
                g.up_off[v] = nrows
                rows.append(block)
                nrows += levels
                pos += size
        if rows:
            block = np.concatenate(rows)
            g.up_links = block[:, 1:].astype(np.int32)
            g.up_cnt = (block[:, 0] & 0xFFFF).astype(np.uint8)
        else:
            g.up_links = np.zeros((0, max_m), np.int32)
        g.n, g.entry, g.maxlevel = int(n), int(entry) if n else -1, int(maxlevel)
        g.n_deleted = int(g.deleted[:n].sum())
        g._index_labels()
        return g

    def _store(self, v: int, x: F32) -> None:
        """Rows x as nodes v, v+1, ... store them (int8 codes and scales, float16 bits, float32)."""
        x = np.asarray(x, np.float32).reshape(-1, self.dim)
        end = v + len(x)
        if self.dtype == "int8":
            self.vecs[v:end], self.scale[v:end] = to_int8(x)
        elif self.dtype == "float16":
            self.vecs[v:end] = half_bits(x)  # subnormals flushed: the kernels widen exactly
        else:
            self.vecs[v:end] = x

    def _index_labels(self) -> None:
        live = np.flatnonzero(~self.deleted[: self.n])
        top = int(self.labels[: self.n].max()) + 1 if self.n else 0
        self.node_of = np.full(top, -1, np.int32)
        self.node_of[self.labels[live]] = live

    def resize_index(self, cap: int, exact: bool = False) -> None:
        """Room for `cap` nodes (links widen to int32 past NARROW_NODES)."""
        old = len(self.nlinks)
        if cap <= old and not exact:
            return
        n, m0 = self.n, self.links.shape[1]
        dtype = np.uint16 if cap <= NARROW_NODES else np.int32
        vecs = np.zeros((cap, self.dim), self.vecs.dtype)
        links = np.zeros((cap, m0), dtype)
        vecs[:n], links[:n] = self.vecs[:n], self.links[:n]
        self.vecs, self.links = vecs, links
        if self.dtype == "int8":
            scale = np.zeros(cap, np.float32)
            scale[:n] = self.scale[:n]
            self.scale = scale
        for name, fill in (("nlinks", 0), ("labels", -1), ("deleted", False), ("up_off", -1)):
            a = getattr(self, name)
            grown = np.full(cap, fill, a.dtype)
            grown[:n] = a[:n]
            setattr(self, name, grown)

    def add_items(self, x: F32, labels: Any, num_threads: int = 1) -> None:
        """Insert rows of `x` under `labels` (new labels; hnswlib's level-0 insert each)."""
        x = np.ascontiguousarray(x, np.float32).reshape(-1, self.dim)
        labels = np.asarray(labels, np.int64).reshape(-1)
        if self.n + len(x) > len(self.nlinks):
            self.resize_index(max(self.n + len(x), len(self.nlinks) * 5 // 4 + 16))
        top = int(labels.max()) + 1 if len(labels) else 0
        if top > len(self.node_of):
            grown = np.full(max(top, len(self.node_of) * 5 // 4), -1, np.int32)
            grown[: len(self.node_of)] = self.node_of
            self.node_of = grown
        for row, label in zip(x, labels.tolist(), strict=True):
            v = self.n
            self._store(v, row)
            self.labels[v] = label
            self.n += 1
            if self.entry < 0:
                self.entry, self.maxlevel = v, 0
                self.up_off[v] = -1
            else:
                kern.insert(
                    v, self.kernel_vecs, self.links, self.nlinks, self.deleted, self.up_off,
                    self.up_links, self.up_cnt, self.entry, self.maxlevel, self.n,
                    self.ef_construction, self.m, self.space == "ip", *self.scratch(),
                )  # fmt: skip
            self.node_of[label] = v

    # --- search ----------------------------------------------------------------------------

    def knn_query(self, x: F32, k: int = 1, num_threads: int = 1) -> tuple[I64, F32]:
        """Labels and distances of each row's k nearest live heads (a beam of max(ef, k),
        ef = k: callers ask for max(ef, m) and keep m columns, as with hnswlib's ef 1). A
        row whose beam finds fewer than k (live heads it cannot reach: asking for nearly
        every head after splits and deletions) is answered over every live head instead,
        where hnswlib raised. RuntimeError when k exceeds the live heads."""
        x = np.ascontiguousarray(x, np.float32).reshape(-1, self.dim)
        nq = len(x)
        out_i = np.empty((nq, k), np.int64)
        out_d = np.empty((nq, k), np.float32)
        if nq and (self.n == 0 or k > self.n - self.n_deleted):
            raise RuntimeError("head graph: fewer live heads than k")
        args = (
            self.kernel_vecs, self.links, self.nlinks, self.deleted, self.up_off, self.up_links,
            self.up_cnt, self.entry, self.maxlevel, self.n, k, k, self.space == "ip",
            out_i, out_d,
        )  # fmt: skip
        if num_threads > 1 and nq > PARALLEL_CHUNK:  # chunks on the scan's thread pool
            chunks = -(-nq // PARALLEL_CHUNK)

            def task(c: int, _: None) -> None:
                lo = c * PARALLEL_CHUNK
                kern.search_batch(x, lo, min(nq, lo + PARALLEL_CHUNK), *args, *self.scratch())

            run_phases([(chunks, task)], [None] * min(num_threads, chunks))
        elif nq:
            kern.search_batch(x, 0, nq, *args, *self.scratch())
        short = np.flatnonzero(out_i[:, -1] < 0) if nq else out_i[:0, 0]
        if len(short):
            ip = self.space == "ip"
            vecs = self.kernel_vecs
            kern.exact_rows(x, short, vecs, self.deleted, self.n, k, out_i, out_d, ip)
        return self.labels[out_i].astype(np.int64), out_d

    def get_items(self, labels: Any) -> F32:
        """The stored (int8- or float16-rounded) vectors of `labels`, float32 (n, dim);
        RuntimeError, as hnswlib's, for a label that is not a live head."""
        want = np.asarray(labels, np.int64).reshape(-1)
        ok = (want >= 0) & (want < len(self.node_of))
        nodes = self.node_of[np.where(ok, want, 0)] if len(self.node_of) else want
        if not ok.all() or (nodes < 0).any():
            raise RuntimeError("head graph: a label is not a live head")
        rows = self.vecs[nodes]
        out: F32
        if self.dtype == "int8":
            out = rows.astype(np.float32) * self.scale[nodes][:, None]
        elif self.dtype == "float16":
            out = rows.view(np.float16).astype(np.float32)
        else:
            out = rows.copy()
        return out

    def get_current_count(self) -> int:
        """Nodes in use, deleted ones included (hnswlib's count)."""
        return self.n

    def get_ids_list(self) -> list[int]:
        """Labels of every node, deleted ones included (hnswlib's list)."""
        out: list[int] = self.labels[: self.n].tolist()
        return out

    def live_labels(self) -> I64:
        """Labels of the live (not deleted) nodes, ascending."""
        out: I64 = np.sort(self.labels[: self.n][~self.deleted[: self.n]]).astype(np.int64)
        return out

    def get_max_elements(self) -> int:
        return len(self.nlinks)

    def set_ef(self, ef: int) -> None:
        """hnswlib's call, kept for the interface: every query gives its own effort."""

    # --- remove ----------------------------------------------------------------------------

    def mark_deleted(self, label: int) -> None:
        """The head of `label` is no longer returned (it still routes searches)."""
        v = int(self.node_of[label])
        if v < 0 or self.deleted[v]:
            raise RuntimeError(f"head graph: label {label} is not a live head")
        self.deleted[v] = True
        self.node_of[label] = -1
        self.n_deleted += 1

    # --- save, load, size ------------------------------------------------------------------

    def to_sections(self) -> list[bytes]:
        """JSON-free raw little-endian arrays: a header row (the vectors' form last, as its
        index in HEAD_DTYPES), then the used part of each array, the int8 scales last (empty
        for the other forms)."""
        n = self.n
        head = np.array(
            [self.dim, self.m, self.ef_construction, self.links.shape[1], n, self.entry,
             self.maxlevel, self.space == "ip", HEAD_DTYPES.index(self.dtype)], "<i8",
        )  # fmt: skip
        arrays = (
            head,
            self.vecs[:n].astype(_FILE_TYPE[self.dtype]),
            self.links[:n].astype("<i4"),
            self.nlinks[:n],
            self.labels[:n].astype("<i8"),
            self.deleted[:n].astype(np.uint8),
            self.up_off[:n].astype("<i4"),
            self.up_links.astype("<i4"),
            self.up_cnt,
            self.scale[:n].astype("<f4"),
        )
        return [a.tobytes() for a in arrays]

    @classmethod
    def from_sections(cls, sections: list[bytes], dim: int, version: int = 3) -> HeadGraph:
        """The graph of `to_sections`' arrays; of a version-2 file (9 sections, no scales,
        the header's last field 1 for float16 and 0 for float32) when `version` is 2."""
        want = 9 if version == 2 else 10
        if len(sections) != want:
            raise FormatError(f"head graph: expected {want} sections, found {len(sections)}")
        hd = np.frombuffer(sections[0], "<i8")
        if len(hd) != 9 or int(hd[0]) != dim:
            raise FormatError(f"head graph: header does not match dim {dim}")
        _, m, efc, m0, n, entry, maxlevel, ip, form = (int(v) for v in hd)
        forms = ("float32", "float16") if version == 2 else HEAD_DTYPES
        if not 0 <= form < len(forms):
            raise FormatError(f"head graph: unknown vector form {form}")
        g = cls("ip" if ip else "l2", dim, m, efc, m0, forms[form])
        g.resize_index(n, exact=True)
        g.vecs[:n] = np.frombuffer(sections[1], _FILE_TYPE[g.dtype]).reshape(n, dim)
        if g.dtype == "int8":
            g.scale[:n] = np.frombuffer(sections[9], "<f4")
        g.links[:n] = np.frombuffer(sections[2], "<i4").reshape(n, m0)
        g.nlinks[:n] = np.frombuffer(sections[3], np.uint8)
        g.labels[:n] = np.frombuffer(sections[4], "<i8")
        g.deleted[:n] = np.frombuffer(sections[5], np.uint8).astype(bool)
        g.up_off[:n] = np.frombuffer(sections[6], "<i4")
        g.up_links = np.frombuffer(sections[7], "<i4").reshape(-1, m).astype(np.int32)
        g.up_cnt = np.frombuffer(sections[8], np.uint8).copy()
        g.n, g.entry, g.maxlevel = n, entry, maxlevel
        g.n_deleted = int(g.deleted[:n].sum())
        g._index_labels()
        return g

    def nbytes(self) -> int:
        """Bytes of the arrays (the graph's resident memory, less Python object overhead)."""
        arrays: list[npt.NDArray[Any]] = [self.vecs, self.scale, self.links, self.nlinks]
        arrays += [self.labels, self.deleted, self.node_of]
        rest = (self.up_off, self.up_links, self.up_cnt)
        return sum(a.nbytes for a in arrays) + sum(a.nbytes for a in rest)
