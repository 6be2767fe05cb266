"""The coder of "bits" posting files: one global centroid and one random rotation.

A `vector_dtype="bits"` index stores, per posting entry, the 1-bit code of its vector's
rotated residual and two factors (`vecdb.kernels.bitscan`, "the engine's form"). This module
owns what every code of a posting file depends on: the centroid c (the mean of the bulk
build's vectors, or of the first batch an empty index receives) and the orthogonal rotation
(a d x d float32 matrix, drawn from the build's seed once and then persisted as it is, in
the state file's quantizer section, like the int8 `Quantizer`; never drawn again on open).
Both are fixed for the life of the posting file, so an entry's code never depends on the
posting it sits in: a split, merge, reassignment or compaction writes the same bytes again.
Rows are coded as the rerank store holds them (float16-rounded with a float16 store), so a
row read back from the store codes to the same bytes as when it was inserted. No file I/O.
"""

from __future__ import annotations

import struct
import threading

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.spann.headgraph import to_half
from vecdb.index.spann.quant import Quantizer
from vecdb.kernels.bitscan import encode_rows, entry_words, rotation
from vecdb.kernels.posting import METRIC_CODE

F32 = npt.NDArray[np.float32]
U64 = npt.NDArray[np.uint64]
MAGIC = b"BITC"  # the section's own tag (the state file carries the format version)
HEADER = struct.Struct("<4sIII")  # magic, dim, metric code, float16 rows (0 / 1)
# Rows a fit or an encode converts at a time: a whole-matrix `store_rows` made a float32
# copy of the build's vectors (MiniLM-384, 390,000: the build child's peak 972 MiB, 474 MiB
# with float16 postings)
CHUNK_BYTES = 16 << 20


def store_rows(vectors: F32, half: bool) -> F32:
    """Rows as the rerank store gives them back: float16-rounded (subnormals flushed to 0,
    as `VectorStore.encode`) when `half`, else float32."""
    x = np.ascontiguousarray(vectors, np.float32)
    if not half:
        return x
    out: F32 = to_half(x).view(np.float16).astype(np.float32)
    return out


class BitCoder:
    """Codes rows as "bits" posting entries (`bitscan.encode_rows`) for one posting file."""

    dim: int  # vector dimension
    metric: str  # "l2" | "ip" | "cosine": the factors are in its units
    half: bool  # rows are coded float16-rounded (the rerank store's float16 rows)
    centroid: F32  # (dim,) the one centroid every residual is taken from
    rot: F32  # (dim, dim) the orthogonal rotation: residuals are rotated as r @ rot
    qrot: npt.NDArray[np.uint16]  # rot's float16 bits: what searches rotate queries with

    def __init__(self, centroid: F32, rot: F32, metric: str, half: bool) -> None:
        self.centroid = np.ascontiguousarray(centroid, np.float32)
        self.rot = np.ascontiguousarray(rot, np.float32)
        # Entries are coded with rot; a query rotated with its float16 copy brings half the
        # bytes in (a 384-d rotation is 590 KB, read per query) for a rounding far below
        # the query's 4-bit quantization (`bitscan._rotate_tile`).
        self.qrot = self.rot.astype(np.float16).view(np.uint16)
        self.dim, self.metric, self.half = len(self.centroid), metric, half
        self._scratch = threading.local()

    def held(self, n_slots: int) -> npt.NDArray[np.uint8]:
        """This thread's zeroed bitmap of `n_slots` slots for `bitscan.scan_blocks` (the
        slots a query's candidate heap holds; the kernel leaves it zeroed), kept for the
        coder's life instead of made per call: one bit a slot, 1.25 MB at 10,000,000."""
        got: npt.NDArray[np.uint8] | None = getattr(self._scratch, "held", None)
        need = (n_slots + 7) // 8 + 1
        if got is None or len(got) < need:
            got = np.zeros(max(need, 1024), np.uint8)
            self._scratch.held = got
        return got

    @classmethod
    def fit(cls, vectors: F32, metric: str, rerank: str, seed: int) -> BitCoder:
        """The coder of a new posting file: the mean of `vectors` (zero if none) and a
        rotation drawn from `seed`."""
        d = vectors.shape[1]
        half = rerank == "float16"
        total = np.zeros(d, np.float64)
        for lo, hi in _chunks(vectors):
            total += store_rows(vectors[lo:hi], half).sum(0, dtype=np.float64)
        c = total / max(1, len(vectors))
        return cls(c.astype(np.float32), rotation(d, seed), metric, half)

    @property
    def words(self) -> int:
        """uint64 words per entry (`bitscan.entry_words`)."""
        return entry_words(self.dim)

    def encode(self, vectors: F32) -> U64:
        """Entries (n, words) of rows (n, dim), converted a chunk at a time."""
        out = np.empty((len(vectors), self.words), np.uint64)
        for lo, hi in _chunks(vectors):
            x = store_rows(vectors[lo:hi], self.half)
            out[lo:hi] = encode_rows(x, self.centroid, self.rot, METRIC_CODE[self.metric])
        return out

    def to_bytes(self) -> bytes:
        head = HEADER.pack(MAGIC, self.dim, METRIC_CODE[self.metric], int(self.half))
        return head + self.centroid.tobytes() + self.rot.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, dim: int) -> BitCoder:
        want = HEADER.size + 4 * (dim + dim * dim)
        if len(data) != want or data[:4] != MAGIC:
            raise FormatError(f"bits coder: {len(data)} bytes, expected {want} for d={dim}")
        _, d, code, half = HEADER.unpack_from(data, 0)
        names = {v: k for k, v in METRIC_CODE.items()}
        if d != dim or code not in names:
            raise FormatError(f"bits coder: dim {d}, metric code {code} (expected dim {dim})")
        arr = np.frombuffer(data, np.float32, offset=HEADER.size)
        return cls(arr[:dim].copy(), arr[dim:].reshape(dim, dim).copy(), names[code], bool(half))


def _chunks(vectors: F32) -> list[tuple[int, int]]:
    step = max(1, CHUNK_BYTES // max(1, 4 * int(vectors.shape[1])))
    return [(lo, min(len(vectors), lo + step)) for lo in range(0, len(vectors), step)]


Codec = Quantizer | BitCoder  # what a posting file's components are coded with, if anything


def load_codec(data: bytes, dim: int, vector_dtype: str) -> Codec | None:
    """The state file's quantizer section back: an int8 `Quantizer`, a `BitCoder` ("bits")
    or None (float postings, or an empty section)."""
    if not data:
        return None
    if vector_dtype == "bits":
        return BitCoder.from_bytes(data, dim)
    return Quantizer.from_bytes(data, dim)
