"""Additive residual codes: a residual quantiser of full-dimensional byte codebooks.

This module owns the `residual_codec="rq"` encoding of the multi-vector residuals: P codebooks
of 256 d-dimensional codewords, one byte per codebook, a residual read back as the sum of its P
codewords. The codebooks are trained stage by stage (each one a Lloyd k-means, `PQ_ITERS`
iterations on at most `PQ_SAMPLE` rows, of what the earlier stages leave); tokens are coded by a
beam search over the stages (`RQ_BEAM` partial codes kept per token) minimising the same
anisotropic error as the product codes, |e|^2 + (eta - 1)(u . e)^2 with u the token's direction.
Since q . (c_1 + ... + c_P) = sum_p q . c_p, a query's scores stay a byte lookup-table sum
(`lut`, shape (P, 256, m), the table the product codes use): the rerank kernel is unchanged.
Unlike the product codes, every codeword spans all d dimensions, so the codebooks are
P x 256 x d floats (512 KB at d = 128, P = 32 here; 128 KB for product codes). Pure numpy plus
the k-means assignment kernel; no files.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vecdb.kernels.kmeans import assign

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

RQ_BEAM = 4  # partial codes kept per token between stages of the encoding
RQ_CHUNK = 2048  # tokens encoded per step (bounds the (chunk, beam, 256) temporaries)


def train_additive(
    resid: F32, nbytes: int, iters: int, sample: int, seed: int, splits: int = 1
) -> F32:
    """Codebooks (nbytes, 256, d) of a residual quantiser: stage p is a Lloyd k-means of 256
    on what stages 0..p-1 leave of at most `sample` residual rows (greedy assignment). With
    `splits` > 1 the dimensions split evenly into that many groups, each with its own run of
    stages (nbytes split evenly too): the codewords are zero outside their group (a product of
    residual quantisers, still one additive code). The groups' stages interleave (byte p
    belongs to group p mod splits), so the encoding's beam search codes every group coarsely
    before refining any: with the anisotropic cost, a group coded to the end first would bend
    its codes to cancel the other groups' still uncoded error along the token."""
    rng = np.random.default_rng(seed)
    x = resid if len(resid) <= sample else resid[rng.choice(len(resid), sample, replace=False)]
    d = x.shape[1]
    books = np.zeros((nbytes, 256, d), np.float32)
    dims = np.array_split(np.arange(d), splits)
    stages = [np.arange(nbytes)[g::splits] for g in range(splits)]  # interleaved: see below
    for group, run in zip(dims, stages, strict=True):
        left = np.ascontiguousarray(x[:, group], dtype=np.float32)
        for p in run:
            pick = rng.choice(len(left), 256, replace=len(left) < 256)
            words = left[pick].copy()
            for _ in range(iters):
                lab = assign(left, words)[0]
                count = np.bincount(lab, minlength=256)
                used = count > 0
                total = np.zeros_like(words)
                np.add.at(total, lab, left)
                words[used] = total[used] / count[used, None]
            books[p][:, group] = words
            left -= words[assign(left, words)[0]]
    return books


def encode_additive(resid: F32, unit: F32, books: F32, eta: float, beam: int = RQ_BEAM) -> U8:
    """Byte codes (n, P) of residuals under `books`, by beam search: after each stage the
    `beam` partial codes with the smallest |e|^2 + (eta - 1)(u . e)^2 survive (u: `unit`, the
    tokens' directions; eta = 1 is plain squared error)."""
    n, d = resid.shape
    nb = books.shape[0]
    out = np.empty((n, nb), np.uint8)
    sq_words = np.einsum("pvd,pvd->pv", books, books)
    w = np.float32(eta - 1.0)
    for lo in range(0, n, RQ_CHUNK):
        r0 = np.ascontiguousarray(resid[lo : lo + RQ_CHUNK], np.float32)
        u = np.ascontiguousarray(unit[lo : lo + RQ_CHUNK], np.float32)
        c = len(r0)
        rows = np.arange(c)[:, None]
        left = r0[:, None, :]  # (c, b, d) what the partial codes leave
        along = np.einsum("cd,cd->c", r0, u)[:, None]  # (c, b) u . left
        cost = np.einsum("cd,cd->c", r0, r0)[:, None] + w * along * along
        codes = np.zeros((c, 1, nb), np.uint8)
        for p in range(nb):
            words = books[p]
            b = left.shape[1]
            dots = (left.reshape(c * b, d) @ words.T).reshape(c, b, 256)
            uw = (u @ words.T)[:, None, :]  # (c, 1, 256)
            new = (
                cost[:, :, None]
                - 2.0 * dots
                + sq_words[p][None, None, :]
                + w * (uw * uw - 2.0 * along[:, :, None] * uw)
            ).reshape(c, b * 256)
            keep = min(beam, b * 256)
            sel = np.argpartition(new, keep - 1, axis=1)[:, :keep]
            parent, word = sel // 256, sel % 256
            cost = new[rows, sel]
            left = left[rows, parent] - words[word]
            along = along[rows, parent] - np.take_along_axis(uw[:, 0, :], word, axis=1)
            codes = codes[rows, parent]
            codes[:, :, p] = word
        out[lo : lo + c] = codes[np.arange(c), np.argmin(cost, axis=1)]
    return out


def decode_additive(codes: U8, books: F32) -> F32:
    """Residuals (n, d) of byte codes: the sum of their codewords."""
    out = np.zeros((len(codes), books.shape[2]), np.float32)
    for p in range(books.shape[0]):
        out += books[p][codes[:, p]]
    return out


def additive_lut(q: F32, books: F32, width: int = 0) -> F32:
    """Byte lookup table (P, 256, m) of queries q (m, d): ``lut[p, v, i] = q[i] . books[p, v]``
    (with `width` > m, (P, 256, width) and zero past m, as `bitpack.build_lut`)."""
    nb, nv, d = books.shape
    m = len(q)
    qp = np.zeros((max(width, m), d), np.float32)
    qp[:m] = q
    lut = (books.reshape(nb * nv, d) @ qp.T).reshape(nb, nv, len(qp))
    return np.ascontiguousarray(lut, dtype=np.float32)
