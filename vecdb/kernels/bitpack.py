"""Bit layouts of compressed tokens, and the query-side lookup tables that score them.

This module owns three layouts and nothing else:

- *code streams*: one ``bits``-bit code per token, token t at bit ``t * bits`` of a
  little-endian byte stream, followed by 2 bytes of zero padding so a reader may always load
  3 bytes (``vecdb.kernels.maxsim.code_at``); ``code_bits(K)`` = ceil(log2 K), at least 1;
- *small-code rows*: ``b``-bit values per dimension (b in 1, 2, 4, 8), ``8 / b`` dimensions a
  byte, dimension j in byte ``j // (8 / b)`` at bit ``(j % (8 / b)) * b``; rows are
  ceil(d * b / 8) bytes, unused high bits 0. With b = 1 this is exactly the byte view of
  ``vecdb.kernels.hamming.pack_signs`` (bit j of the row is bit j % 8 of byte j // 8);
- *byte codebooks* (P, 256, per) float32: byte position p of a row holds the dimensions
  ``p * per ...`` (per = 8 / b; with more bytes than ceil(d / per), the dimensions split
  evenly instead, `book_slots`) and byte value v stands for the sub-vector ``books[p, v]`` (product
  quantisation with 256 codewords a byte). A per-dimension scalar grid is the special case
  ``grid_books``; `encode_books` picks each row's bytes (nearest codeword, then optionally an
  anisotropic refinement that weighs the error along each row's own direction more, since that
  component moves the scores of the query tokens that match it);
- *byte lookup tables* (P, 256, m) float32: ``lut[p, v, i]`` is query token i's dot product
  with ``books[p, v]``. Scoring a token is then P lookups instead of d multiply-adds and no
  float reconstruction (WARP's trick at byte granularity).

Pure numpy plus one numba kernel (`encode_books`, 16 codewords a vector register through
`vecdb.kernels.simd`); no I/O, no state.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from vecdb.kernels.simd import LANES, vfma, vload, vsplat, vstore

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

CODE_PAD = 2  # zero bytes after a code stream
ENCODE_BLOCK = 64  # rows of `encode_books` per scratch allocation (one prange step)
SMALL_BITS = (1, 2, 4, 8)


def code_bits(k: int) -> int:
    """Bits per code for a codebook of k centroids: ceil(log2 k), at least 1."""
    return max(1, int(k - 1).bit_length())


def pack_codes(codes: npt.ArrayLike, bits: int) -> U8:
    """The code stream of `codes` (each in [0, 2**bits)), with its padding."""
    c = np.asarray(codes, dtype=np.int64).ravel()
    if len(c) and (c.min() < 0 or c.max() >= (1 << bits)):
        raise ValueError(f"codes must lie in [0, 2**{bits})")
    shifts = np.arange(bits, dtype=np.int64)
    bitmat = ((c[:, None] >> shifts[None, :]) & 1).astype(np.uint8)  # (n, bits) LSB first
    stream = np.packbits(bitmat.ravel(), bitorder="little")
    return np.concatenate([stream, np.zeros(CODE_PAD, np.uint8)])


def unpack_codes(packed: U8, bits: int, n: int) -> I64:
    """The first n codes of a code stream."""
    need = (n * bits + 7) // 8
    bitv = np.unpackbits(packed[:need], bitorder="little")[: n * bits].reshape(n, bits)
    weights = (np.int64(1) << np.arange(bits, dtype=np.int64))[None, :]
    out: I64 = (bitv.astype(np.int64) * weights).sum(axis=1)
    return out


def append_codes(buf: U8, n_old: int, codes: npt.ArrayLike, bits: int) -> U8:
    """Append codes to a stream holding n_old codes, in place when `buf` has room (else in a
    copy of twice the size). Bytes past the old codes are zero, so the boundary byte is OR-ed:
    a reader of the old n_old codes sees them unchanged (its masks ignore the new bits)."""
    c = np.asarray(codes, dtype=np.int64).ravel()
    end = ((n_old + len(c)) * bits + 7) // 8 + CODE_PAD
    if len(buf) < end:
        grown = np.zeros(max(end, 2 * len(buf)), np.uint8)
        grown[: len(buf)] = buf
        buf = grown
    if len(c) == 0:
        return buf
    pos = n_old * bits
    bitv = ((c[:, None] >> np.arange(bits, dtype=np.int64)[None, :]) & 1).astype(np.uint8)
    stream = np.packbits(np.concatenate([np.zeros(pos % 8, np.uint8), bitv.ravel()]),
                         bitorder="little")  # fmt: skip
    start = pos // 8
    buf[start] |= stream[0]
    buf[start + 1 : start + len(stream)] = stream[1:]
    return buf


def row_bytes(d: int, b: int) -> int:
    """Bytes of one small-code row of d dimensions at b bits each."""
    return (d * b + 7) // 8


def pack_small(values: npt.NDArray[np.integer], b: int) -> U8:
    """Pack (n, d) values in [0, 2**b) into (n, row_bytes(d, b)) uint8 rows."""
    if b not in SMALL_BITS:
        raise ValueError(f"bits per value must be one of {SMALL_BITS}, got {b}")
    v = np.asarray(values)
    n, d = v.shape
    per = 8 // b
    nbytes = row_bytes(d, b)
    padded = np.zeros((n, nbytes * per), np.uint8)
    padded[:, :d] = v
    grouped = padded.reshape(n, nbytes, per)
    out = np.zeros((n, nbytes), np.uint8)
    for s in range(per):
        out |= grouped[:, :, s] << np.uint8(s * b)
    return out


def unpack_small(packed: U8, b: int, d: int) -> U8:
    """Inverse of `pack_small`: (n, d) values."""
    per = 8 // b
    n, nbytes = packed.shape
    out = np.empty((n, nbytes, per), np.uint8)
    mask = np.uint8((1 << b) - 1)
    for s in range(per):
        out[:, :, s] = (packed >> np.uint8(s * b)) & mask
    return out.reshape(n, nbytes * per)[:, :d].copy()


def grid_books(values: F32, b: int) -> F32:
    """Byte codebooks (P, 256, 8 / b) of a per-dimension scalar grid: code c in dimension j
    stands for ``values[j, c]`` (values: (d, 2**b)); padding dimensions are 0."""
    d = values.shape[0]
    per = 8 // b
    nbytes = row_bytes(d, b)
    vals = np.zeros((nbytes * per, 1 << b), np.float32)
    vals[:d] = values
    byte = np.arange(256, dtype=np.int64)
    sub = (byte[None, :] >> (np.arange(per)[:, None] * b)) & ((1 << b) - 1)  # (per, 256)
    dims = np.arange(nbytes * per).reshape(nbytes, per)  # (P, per)
    books: F32 = vals[dims[:, :, None], sub[None, :, :]].transpose(0, 2, 1)  # (P, 256, per)
    return np.ascontiguousarray(books, np.float32)


def book_slots(d: int, nb: int, per: int) -> I64:
    """The dimension each of the nb * per codebook columns holds (-1: padding). With the
    natural byte count (nb = ceil(d / per)) byte p holds dimensions p * per ... (the layout
    of `grid_books`); with more bytes, the d dimensions are split as evenly as possible
    (sizes ceil(d / nb) then floor), in order, each group padded to `per` columns."""
    if nb * per < d or nb > d:
        raise ValueError(f"{nb} byte codebooks of {per} columns cannot hold {d} dimensions")
    if -(-d // per) == nb:
        slots = np.arange(nb * per, dtype=np.int64)
        slots[slots >= d] = -1
        return slots
    sizes = np.full(nb, d // nb, np.int64)
    sizes[: d % nb] += 1
    if sizes[0] > per:
        raise ValueError(f"{nb} byte codebooks of {per} columns cannot hold {d} dimensions")
    slots = np.full((nb, per), -1, np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for p in range(nb):
        slots[p, : sizes[p]] = np.arange(start[p], start[p] + sizes[p])
    return slots.ravel()


def spread(x: F32, slots: I64) -> F32:
    """Rows of x (n, d) laid out in codebook columns (`book_slots`), padding 0."""
    if len(slots) == x.shape[1] and (slots == np.arange(len(slots))).all():
        return np.ascontiguousarray(x, np.float32)
    out = np.zeros((len(x), len(slots)), np.float32)
    used = slots >= 0
    out[:, used] = x[:, slots[used]]
    return out


def padded(x: F32, width: int) -> F32:
    """Rows of x zero-padded to `width` columns (x itself when already that wide)."""
    if x.shape[1] == width:
        return np.ascontiguousarray(x, np.float32)
    out = np.zeros((len(x), width), np.float32)
    out[:, : x.shape[1]] = x
    return out


@njit(cache=True, inline="always")
def _first_min(bits, p):  # type: ignore[no-untyped-def]
    """Index of the smallest float32 of row p, the values given as their int32 bit patterns
    (a view), the first of equal ones. Each becomes an int64 key that orders as the float
    does (a negative one with its magnitude bits flipped; -0 just below +0) with the index in
    its low half, so the loop is an integer min reduction, which LLVM vectorises: it leaves a
    float min or argmin loop scalar (measured 3x slower a pass)."""
    best = np.int64(0x7FFFFFFFFFFFFFFF)
    for v in range(bits.shape[1]):
        k = np.int64(bits[p, v])
        best = min(best, ((k ^ ((k >> 31) & 0x7FFFFFFF)) << 32) | v)
    return best & 0xFFFFFFFF


@njit(cache=True, parallel=True, fastmath=True, nogil=True)
def _encode_books(x, bt, norms, direction, eta, passes, out):  # type: ignore[no-untyped-def]
    n, width = x.shape
    nb, per, nv = bt.shape
    k = eta - np.float32(1.0)
    for blk in prange((n + ENCODE_BLOCK - 1) // ENCODE_BLOCK):
        base = np.empty((nb, nv), np.float32)
        ub = np.empty((nb, nv), np.float32)
        cost = np.empty((1, nv), np.float32)
        base_bits = base.view(np.int32)
        cost_bits = cost.view(np.int32)
        for t in range(blk * ENCODE_BLOCK, min(n, (blk + 1) * ENCODE_BLOCK)):
            # The positions own disjoint dimensions, so for each position p and codeword v
            # these stay fixed while the codes change: base = |b|^2 - 2 x_p . b (the squared
            # error on p's dimensions less |x_p|^2) and ub = u_p . b, with b = books[p, v].
            for p in range(nb):
                for c in range(0, nv, LANES):
                    accb = vload(norms, p * nv + c)
                    accu = vsplat(0.0)
                    for s in range(per):
                        b = vload(bt, (p * per + s) * nv + c)
                        accb = vfma(vsplat(np.float32(-2.0) * x[t, p * per + s]), b, accb)
                        if passes:
                            accu = vfma(vsplat(direction[t, p * per + s]), b, accu)
                    vstore(base, p * nv + c, accb)
                    vstore(ub, p * nv + c, accu)
                out[t, p] = _first_min(base_bits, p)
            if passes == 0:
                continue
            # Anisotropic refinement: minimise |e|^2 + (eta - 1) (u . e)^2 by coordinate descent
            # over byte positions, e = x - reconstruction, u = the row's unit direction. With
            # a = u . e once p's codeword is put back, codeword v at p costs
            # base + (eta - 1) (a - ub)^2 plus what the other positions cost.
            ux = np.float32(0.0)
            for j in range(width):
                ux += direction[t, j] * x[t, j]
            for _ in range(passes):
                a = ux
                for p in range(nb):
                    a -= ub[p, out[t, p]]
                for p in range(nb):
                    a += ub[p, out[t, p]]
                    for v in range(nv):
                        r = a - ub[p, v]
                        cost[0, v] = base[p, v] + k * r * r
                    out[t, p] = _first_min(cost_bits, 0)
                    a -= ub[p, out[t, p]]


def encode_books(
    x: F32, books: F32, direction: F32 | None = None, eta: float = 1.0, passes: int = 0
) -> U8:
    """Bytes (n, P) of rows x (n, d) under byte codebooks (P, 256, per): the nearest codeword
    per byte position, then `passes` rounds of coordinate descent on
    |e|^2 + (eta - 1) (u . e)^2 with u the rows of `direction` (unit vectors; needed when
    passes > 0)."""
    nb, nv, per = books.shape
    if nv != 256 or nb * per < x.shape[1]:
        raise ValueError(f"books {books.shape} do not cover rows of {x.shape[1]} dimensions")
    slots = book_slots(x.shape[1], nb, per)
    xp = spread(x, slots)
    if passes > 0:
        if direction is None or direction.shape != x.shape:
            raise ValueError("an anisotropic refinement needs a direction per row")
        dp = spread(direction, slots)
    else:
        dp = np.zeros((1, nb * per), np.float32)
    b = np.ascontiguousarray(books, np.float32)
    bt = np.ascontiguousarray(b.transpose(0, 2, 1))  # (P, per, 256): 16 codewords a vector
    out = np.empty((len(x), nb), np.uint8)
    if len(x):
        _encode_books(xp, bt, (b * b).sum(2), dp, np.float32(eta), int(passes), out)
    return out


def build_lut(q: F32, books: F32, width: int = 0) -> F32:
    """Byte lookup table (P, 256, m) of queries q (m, d) over rows coded with byte codebooks
    (P, 256, per): ``lut[p, v, i] = q[i, p * per:(p + 1) * per] . books[p, v]``. With `width`
    > m the table is (P, 256, width), zero past m (the padded lanes of the rerank kernel),
    computed at that width instead of padded by a copy (one stacked matmul, P small GEMMs:
    4x faster than a numba loop at P = 32, m = 12, see bench/RESULTS.md, "Issue 11, a faster
    default pipeline at one thread")."""
    m, d = q.shape
    nb, _, per = books.shape
    qr = spread(q, book_slots(d, nb, per)).reshape(m, nb, per)
    qt = np.zeros((nb, per, max(width, m)), np.float32)  # (P, per, lanes)
    qt[:, :, :m] = qr.transpose(1, 2, 0)
    lut: F32 = np.matmul(np.asarray(books, np.float32), qt)
    return lut


def sign_lut(q: F32) -> F32:
    """Byte table of the asymmetric sign score q . sign(t) over 1-bit rows (bit set = +1)."""
    d = q.shape[1]
    values = np.tile(np.array([-1.0, 1.0], np.float32), (d, 1))
    return build_lut(q, grid_books(values, 1))
