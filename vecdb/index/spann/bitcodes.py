"""The coder of "bits" posting files: one global centroid and one random rotation.

A `vector_dtype="bits"` index stores, per posting entry, the 1-bit code of its vector's
rotated residual and two factors (`vecdb.kernels.bitscan`, "the engine's form"). This module
owns what every code of a posting file depends on: the centroid c (the mean of the bulk
build's vectors, or of the first batch an empty index receives) and the orthogonal rotation
(the signs of a structured rotation, `kernels.hadamard`, for an index created since
2026-12-07, `params.ROTATIONS`; a d x d float32 matrix before), drawn from the build's seed
once and then persisted as it is, in the state file's quantizer section, like the int8
`Quantizer`; never drawn again on open.
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
from vecdb.index.spann.quant import Quantizer
from vecdb.kernels.bitscan import ENCODE_PARALLEL_ROWS, encode_rows, entry_words, rotation
from vecdb.kernels.hadamard import hadamard_signs
from vecdb.kernels.half import half_round
from vecdb.kernels.posting import METRIC_CODE

F32 = npt.NDArray[np.float32]
U64 = npt.NDArray[np.uint64]
MAGIC = b"BITC"  # the section's own tag (the state file carries the format version)
MAGIC_HADAMARD = b"BITH"  # ... of a coder whose rotation is structured (int8 signs)
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
    return half_round(x)


class BitCoder:
    """Codes rows as "bits" posting entries (`bitscan.encode_rows`) for one posting file."""

    dim: int  # vector dimension
    metric: str  # "l2" | "ip" | "cosine": the factors are in its units
    half: bool  # rows are coded float16-rounded (the rerank store's float16 rows)
    centroid: F32  # (dim,) the one centroid every residual is taken from
    # the orthogonal rotation: (dim, dim) float32, residuals rotated as r @ rot; or
    # (rounds, dim) int8, the signs of a structured rotation (`kernels.hadamard`)
    rot: npt.NDArray[np.float32] | npt.NDArray[np.int8]
    # what searches rotate queries with: a dense rot's float16 bits, or the signs
    qrot: npt.NDArray[np.uint16] | npt.NDArray[np.int8]

    def __init__(
        self,
        centroid: F32,
        rot: npt.NDArray[np.float32] | npt.NDArray[np.int8],
        metric: str,
        half: bool,
    ) -> None:
        self.centroid = np.ascontiguousarray(centroid, np.float32)
        if rot.dtype == np.int8:
            self.rot = self.qrot = np.ascontiguousarray(rot, np.int8)
        else:
            self.rot = np.ascontiguousarray(rot, np.float32)
            # Entries are coded with rot; a query rotated with its float16 copy brings half
            # the bytes in (a 384-d rotation is 590 KB, read per query) for a rounding far
            # below the query's 4-bit quantization (`bitscan._rotate_tile`).
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

    @property
    def structured(self) -> bool:
        """Whether the rotation is the structured one (`kernels.hadamard`)."""
        return bool(self.rot.dtype == np.int8)

    @classmethod
    def fit(
        cls, vectors: F32, metric: str, rerank: str, seed: int, kind: str = "dense"
    ) -> BitCoder:
        """The coder of a new posting file: the mean of `vectors` (zero if none) and a
        rotation of `kind` ("dense" or "hadamard", `params.ROTATIONS`) drawn from `seed`."""
        d = vectors.shape[1]
        half = rerank == "float16"
        total = np.zeros(d, np.float64)
        for lo, hi in _chunks(vectors):
            total += store_rows(vectors[lo:hi], half).sum(0, dtype=np.float64)
        c = total / max(1, len(vectors))
        rot = hadamard_signs(d, seed) if kind == "hadamard" else rotation(d, seed)
        return cls(c.astype(np.float32), rot, metric, half)

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
        magic = MAGIC_HADAMARD if self.structured else MAGIC
        head = HEADER.pack(magic, self.dim, METRIC_CODE[self.metric], int(self.half))
        return head + self.centroid.tobytes() + self.rot.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, dim: int) -> BitCoder:
        """A coder back from `to_bytes`: a dense rotation (MAGIC: dim x dim float32) or a
        structured one (MAGIC_HADAMARD: whole rows of dim int8 signs)."""
        fixed = HEADER.size + 4 * dim
        dense = data[:4] == MAGIC and len(data) == fixed + 4 * dim * dim
        rows = (len(data) - fixed) // max(dim, 1) if len(data) > fixed else 0
        signs = data[:4] == MAGIC_HADAMARD and rows > 0 and len(data) == fixed + rows * dim
        if not (dense or signs):
            raise FormatError(
                f"bits coder: {len(data)} bytes (tag {data[:4]!r}), expected "
                f"{fixed + 4 * dim * dim} (dense) or {fixed} + k x {dim} (signs) for d={dim}"
            )
        _, d, code, half = HEADER.unpack_from(data, 0)
        names = {v: k for k, v in METRIC_CODE.items()}
        if d != dim or code not in names:
            raise FormatError(f"bits coder: dim {d}, metric code {code} (expected dim {dim})")
        centroid = np.frombuffer(data, np.float32, dim, offset=HEADER.size).copy()
        if dense:
            rot = np.frombuffer(data, np.float32, offset=fixed).reshape(dim, dim).copy()
            return cls(centroid, rot, names[code], bool(half))
        sg = np.frombuffer(data, np.int8, offset=fixed).reshape(rows, dim).copy()
        if not np.isin(sg, (-1, 1)).all():
            raise FormatError("bits coder: a structured rotation's signs are not all +-1")
        return cls(centroid, sg, names[code], bool(half))


def _chunks(vectors: F32) -> list[tuple[int, int]]:
    # at least ENCODE_PARALLEL_ROWS a chunk: below it `encode_rows` runs on one thread (at
    # 1,536 dimensions 16 MiB is 2,730 rows, so a build coded its rows on one core)
    step = max(ENCODE_PARALLEL_ROWS, CHUNK_BYTES // max(1, 4 * int(vectors.shape[1])))
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
