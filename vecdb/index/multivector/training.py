"""A multi-vector index's training: a new codec learned from the live documents, all of them
encoded with it, the documents written meanwhile taken over, and the swap that publishes it.

This module owns the training's passes (`train`), its memory bounds (what it gathers at
once, the steps it encodes in) and its bound of the bytes it writes (`train_need`). It works
on a `MultiVectorIndex` under that index's locks, as `index.py` documents them, and calls
the index's own encoding of documents; adding, searching, removing and the files are the
index's (`index.py`, `persist.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from vecdb.index import room
from vecdb.index.multivector import persist
from vecdb.index.multivector.codec import QUANTILE_SAMPLE, Codec, Encoded, residual_width
from vecdb.index.multivector.codec import train as train_codec
from vecdb.index.multivector.inputs import doc_steps, gather, ranges
from vecdb.index.multivector.params import MVBuildParams, auto_k
from vecdb.index.multivector.reduce import offsets_of, sizes_of
from vecdb.index.multivector.view import View, cell_pairs, csr, empty_view, with_docs
from vecdb.index.spann.killpoints import kill_point
from vecdb.kernels.bitpack import code_bits, pack_codes
from vecdb.kernels.kmeans import DEFAULT_SAMPLE_PER_CLUSTER, MIN_SAMPLE

if TYPE_CHECKING:
    from vecdb.index.multivector.index import MultiVectorIndex, Stores

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Progress = Callable[[str, int, int], None]

TRAIN_GATHER_BYTES = 512 << 20  # a training gathers every live token up to this (float32)
ENCODE_TOKENS = 262_144  # past it: tokens a step of the encoding gathers
RAW_COMPACT = 0.25  # a training rewrites the raw file when removed documents hold this share
CATCH_UP_ROUNDS = 4  # a training takes over what arrived during it in up to this many rounds
CATCH_UP_TOKENS = ENCODE_TOKENS  # (fewer once under this many tokens wait), then in a final
# one during which the writers encode their own documents with its codec too (`Next`)


@dataclass
class Next:
    """A training's codec once trained, before its view is published: every write from
    document `first` on is encoded with it too, by the writer (`parts`, in document order:
    (encoded tokens, their offsets per document)), so what the training has to take over
    stops growing there."""

    codec: Codec
    first: int
    parts: list[tuple[Encoded, I64]] = field(default_factory=list)


def train(ix: MultiVectorIndex, progress: Progress | None = None) -> None:
    """Train a new codec on the live documents and encode them all. Without live tokens it
    lets every removed document go (`_emptied`). The raw file is kept unless removed documents hold RAW_COMPACT of it
    (`compacts`); then the live documents' rows are written to a new one and numbered
    again. The work runs outside the mutation lock and searches read the previous view
    until the swap. Documents added meanwhile are encoded with the new codec in rounds
    outside the lock, each taking what arrived during the one before; from the start of
    the last round (`Next`) each write encodes its own documents with the new codec as
    well as the current one, so a load faster than the encoding slows to it instead of
    leaving a backlog for the swap, which only appends what the writers encoded;
    removals made meanwhile are applied to it. Up to what the codebook's training
    samples (or TRAIN_GATHER_BYTES of tokens) every live token is gathered at once; past
    that the codebook is trained on that many random tokens (`_sample`) and the
    documents are encoded ENCODE_TOKENS at a time, so memory follows the sample, not
    the collection."""
    with ix._train_lock:
        with ix._lock:
            v = ix._v
            live = np.flatnonzero(v.alive)
            weights_all = ix._weights
        sizes = np.diff(v.raw_off)[live]
        total = int(sizes.sum())
        if total == 0:
            _emptied(ix)
            return
        writes = train_need(ix.params, ix.dim, total, compacts(v, total))
        room.ensure(ix.directory, writes, f"the codebook training of {total:,} tokens")
        if progress:
            progress("gather", 0, len(live))
        need = _training_tokens(ix, total)
        pick = None if total <= need else _sample(ix, v, live, sizes, weights_all, need)
        if pick is None:
            tokens = gather(v.raw, v.raw_off, live)
            weights = weights_all[ranges(v.raw_off, live)]
            # Pass 1: pooled tokens are what the codebook sees.
            enc_tok, enc_off, enc_w = ix._pooled(tokens, offsets_of(sizes), weights)
        else:
            tokens, enc_tok = pick
        kill_point("mv_train_sample")
        if progress:
            progress("train", 0, 1)
        gen = (v.codec.generation if v.codec is not None else 0) + 1
        expect = total * len(enc_tok) // max(1, len(tokens))  # the pooled tokens of all
        peak = None
        if pick is not None and ix.params.rerank_tier == "int8":  # scales cover all
            peak = np.zeros(ix.dim, np.float32)
            for hi, tok, offs, w in steps(v, live, weights_all):
                np.maximum(peak, np.abs(ix._pooled(tok, offs, w)[0]).max(axis=0), out=peak)
                if progress:
                    progress("scales", hi, len(live))
        codec, codes = train_codec(enc_tok, ix.params, gen, ix.unit, expect, peak, progress)
        kill_point("mv_train_codebook")
        if progress:
            progress("train", 1, 1)
        # everything at hand (one step of pass 2, the training's codes reused) or not
        at_hand = [] if pick is not None else [tokens, enc_tok, enc_off, enc_w, codes]
        del tokens, enc_tok, codes, pick
        try:
            _encode_and_swap(ix, v, live, total, weights_all, codec, at_hand, progress)
        finally:
            with ix._lock:
                ix._next = None
        kill_point("mv_train_swapped")
        if progress:
            progress("gather", len(live), len(live))


def _encode_and_swap(
    ix: MultiVectorIndex,
    v: View,
    live: I64,
    total: int,
    weights_all: F32,
    codec: Codec,
    at_hand: list[Any],
    progress: Progress | None,
) -> None:
    """A training's passes 2 and 3 and its swap: the live documents of `v` (`total`
    tokens) encoded with the new `codec` (`at_hand` the training's (tokens, pooled tokens,
    offsets, weights, codes) when it gathered every one, else empty), then the documents
    written meanwhile, in rounds, the last one's writes encoded by the writers."""
    # Pass 2: prune by salience, encode; a new tier file (and raw file, compacting).
    compact = compacts(v, total)
    raw = ix._new_raw() if compact else v.raw
    into = raw if compact else None  # (the raw rows are written again only then)
    tier = ix._new_tier(codec)
    if progress:
        progress("encode", 0, len(live))
    if at_hand:  # one step, the training's codes reused
        parts = [_encode_step(ix, codec, into, tier, *at_hand)]
        at_hand.clear()
    else:
        parts = []
        for hi, tok, offs, w in steps(v, live, weights_all):
            et, eo, ew = ix._pooled(tok, offs, w)
            parts.append(_encode_step(ix, codec, into, tier, tok, et, eo, ew, None))
            if progress:
                progress("encode", hi, len(live) + 1)  # (+1: the lists and the swap)
    kill_point("mv_train_encoded")
    codes = np.concatenate([q[0] for q in parts])
    enc_sizes = np.concatenate([q[3] for q in parts])
    if not compact:  # documents keep their numbers: removed ones encode nothing
        spread = np.zeros(v.docs, np.int64)
        spread[live] = enc_sizes
        enc_sizes = spread
    enc_off = offsets_of(enc_sizes)
    cells, cell_of = cell_pairs(codes, enc_off)
    indptr, cell_docs = csr(cells, cell_of, codec.k)
    z = np.zeros(0, np.int64)
    nv = View(
        slots=v.slots[live].copy() if compact else v.slots,
        raw_off=offsets_of(np.diff(v.raw_off)[live]) if compact else v.raw_off,
        alive=np.ones(len(live), bool) if compact else v.alive.copy(),
        raw_tokens=total if compact else v.raw_tokens,
        codec=codec,
        enc_off=enc_off,
        codes=pack_codes(codes, code_bits(codec.k)),
        residuals=np.concatenate([q[1] for q in parts]),
        signs=np.concatenate([q[2] for q in parts]),
        indptr=indptr,
        cell_docs=cell_docs,
        delta_cells=z,
        delta_docs=z,
        raw=raw,
        tier=tier,
    )
    del parts
    if progress:
        progress("encode", len(live), len(live) + 1)
    # Pass 3: what was written meanwhile, encoded into the new view (not yet published)
    # outside the lock, in rounds, each taking what arrived during the one before. A
    # load that outpaces the encoding makes each round longer than the one before, so
    # after CATCH_UP_ROUNDS rounds (or once under CATCH_UP_TOKENS wait) comes a final
    # one, from whose start the writers encode their own documents with the new codec
    # as well (`Next`); the swap, under the lock, only appends those (their raw rows
    # copied first outside it when compacting). Searches read the previous
    # view until then.
    taken, sq, n = v.docs, 0.0, 0  # documents of the live numbering taken over
    for rnd in range(CATCH_UP_ROUNDS + 1):
        with ix._lock:
            now, weights_now = ix._v, ix._weights
            waiting = int(now.raw_off[-1] - now.raw_off[taken])
            last = rnd == CATCH_UP_ROUNDS or waiting < CATCH_UP_TOKENS
            if last:  # every later write is encoded with the new codec by the writer
                ix._next = Next(codec, now.docs)
        nv, sq, n = _take_over(ix, nv, now, taken, weights_now, compact, sq, n)
        taken = now.docs
        if last:
            break
    copied = taken
    if compact:
        with ix._lock:
            now = ix._v
        copied = _copy_raw(nv, now, copied)
    with ix._lock:
        now, nxt = ix._v, ix._next
        assert nxt is not None and nxt.first == taken
        if compact:
            _copy_raw(nv, now, copied)
        nv, s2, n2 = _with_next(ix, nv, now, nxt)
        if compact:  # documents numbered again
            ix._weights = np.concatenate(
                [
                    weights_all[ranges(v.raw_off, live)],
                    ix._weights[v.raw_tokens : now.raw_tokens],
                ]
            )
            ix._doc_of = {int(s): i for i, s in enumerate(nv.slots)}
        ix._trained_tokens = total
        ix._added_sq, ix._added_n = sq + s2, n + n2
        for s in ix._removed & ix._doc_of.keys():  # removed while we trained
            nv.alive[ix._doc_of[s]] = False
        ix._v = nv
        persist.retire(ix, v, raw=compact)
    if progress:
        progress("encode", len(live), len(live))


def _emptied(ix: MultiVectorIndex) -> None:
    """A training without a live document: when every document of the index is removed,
    it starts over empty and untrained, its files let go (the slots ever removed are still
    remembered: remove wins). Retraining or keeping them would change nothing a search can
    see, and the dead documents' share would ask for a training again and again."""
    with ix._lock:
        old = ix._v
        if old.docs == 0 or old.alive.any():  # nothing to let go, or documents came
            return
        ix._doc_of.clear()
        ix._weights = np.zeros(0, np.float32)
        ix._trained_tokens, ix._added_sq, ix._added_n = 0, 0.0, 0
        ix._v = empty_view(ix._new_raw())
        persist.retire(ix, old)


def _training_tokens(ix: MultiVectorIndex, total: int) -> int:
    """Tokens a training gathers: every live one up to what the k-means and the residual
    codebooks sample anyway, or TRAIN_GATHER_BYTES of them, whichever is more."""
    k = ix.params.K or auto_k(total)
    per_k = ix.params.train_sample or max(MIN_SAMPLE, DEFAULT_SAMPLE_PER_CLUSTER * k)
    return max(per_k, QUANTILE_SAMPLE, TRAIN_GATHER_BYTES // (4 * ix.dim))


def _sample(
    ix: MultiVectorIndex, v: View, live: I64, sizes: I64, weights_all: F32, need: int
) -> tuple[F32, F32]:
    """(raw, pooled) training tokens, about `need` of them: random tokens of every live
    document, or with pooling on (it works on whole documents) random whole documents."""
    rng = np.random.default_rng(ix.params.seed)
    if ix.params.pool <= 0:  # token t of the live ones: its document's start + rank
        ends = np.cumsum(sizes)
        t = np.sort(rng.choice(int(ends[-1]), need, replace=False))
        doc = np.searchsorted(ends, t, "right")
        take = v.raw_off[live[doc]] + t - (ends[doc] - sizes[doc])
        tokens = np.asarray(v.raw.rows(0, v.raw_tokens)[take], np.float32)
        return tokens, tokens
    order = rng.permutation(len(sizes))
    pick = np.sort(order[: int(np.searchsorted(np.cumsum(sizes[order]), need)) + 1])
    docs = live[pick]
    tokens = gather(v.raw, v.raw_off, docs)
    weights = weights_all[ranges(v.raw_off, docs)]
    return tokens, ix._pooled(tokens, offsets_of(sizes[pick]), weights)[0]


def _encode_step(
    ix: MultiVectorIndex,
    codec: Codec,
    raw: Stores | None,
    tier: Stores | None,
    tokens: F32,
    enc_tok: F32,
    enc_off: I64,
    enc_w: F32,
    codes: I64 | None,
) -> tuple[I64, npt.NDArray[np.uint8], npt.NDArray[np.uint8], I64]:
    """Encode documents (pooled `enc_tok` by `enc_off`, `codes` when already assigned;
    their raw `tokens` appended to `raw` unless None): (codes, residuals, signs, encoded
    tokens per document)."""
    if codes is None:
        codes = codec.assign(enc_tok)
    enc_tok, enc_off, codes = ix._pruned(enc_tok, enc_off, enc_w, codes, codec)
    encoded = codec.encode(enc_tok, codes)
    if raw is not None:
        raw.append(tokens)
    if tier is not None:
        tier.append(encoded.tier)
    return encoded.codes, encoded.residuals, encoded.signs, sizes_of(enc_off)


def _with_next(ix: MultiVectorIndex, nv: View, now: View, nxt: Next) -> tuple[View, float, int]:
    """A training's new view `nv` with the documents nxt.first on of the live view `now`
    appended, as the writers encoded them with its codec (their raw rows already in its
    raw store); and the summed squared residual and count of those tokens."""
    docs = np.arange(nxt.first, now.docs, dtype=np.int64)
    if not len(docs):
        return nv, 0.0, 0
    assert sum(len(o) - 1 for _e, o in nxt.parts) == len(docs)
    first_doc = nv.docs
    offs = offsets_of(np.diff(now.raw_off)[docs])
    nv = with_docs(nv, now.slots[docs], offs, now.alive[docs])
    es = [e for e, _o in nxt.parts]
    n = sum(len(e.codes) for e in es)
    sq = sum(e.sq_residual * len(e.codes) for e in es)
    joined = Encoded(
        codes=np.concatenate([e.codes for e in es]),
        residuals=np.concatenate([e.residuals for e in es]),
        signs=np.concatenate([e.signs for e in es]),
        tier=np.concatenate([e.tier for e in es]),
        sq_residual=sq / max(1, n),
    )
    enc_off = offsets_of(np.concatenate([sizes_of(o) for _e, o in nxt.parts]))
    return ix._append_encoded(nv, joined, enc_off, first_doc), sq, n


def _take_over(
    ix: MultiVectorIndex,
    nv: View,
    now: View,
    first: int,
    weights: F32,
    write_raw: bool,
    sq: float,
    n: int,
) -> tuple[View, float, int]:
    """A training's new view `nv` with the documents first, first + 1, ... of the live
    view `now` (`weights` its token weights) appended and encoded with its codec, their
    raw rows written to its raw store when `write_raw` (else they are already there,
    where its numbering puts them); `sq`, `n` summed up with theirs."""
    docs = np.arange(first, now.docs, dtype=np.int64)
    done = 0
    for hi, tok, offs, w in steps(now, docs, weights):  # (bounded memory)
        part = docs[done:hi]
        done = hi
        if write_raw:
            nv.raw.append(tok)
        first_doc = nv.docs
        nv = with_docs(nv, now.slots[part], offs, now.alive[part])
        nv, s, m = ix._encoded(nv, first_doc, tok, offs, w)
        sq, n = sq + s, n + m
    return nv, sq, n


def train_need(p: MVBuildParams, dim: int, tokens: int, compact: bool) -> int:
    """An upper bound of the bytes a training of `tokens` live tokens writes (`room`): per
    token its code (at most 4 bytes), residual and sign bits in the next state file, its
    rerank-tier row, and when it compacts (`compacts`) its float32 row again; 1 MiB for
    the codebook and the rest of the state file."""
    per = 4 + (residual_width(dim, p.residual_bits, p.residual_bytes) if p.residual_bits else 0)
    per += -(-dim // 8) if p.sign_bits else 0
    per += {"int8": 1, "float16": 2}.get(p.rerank_tier, 0) * dim
    per += 4 * dim if compact else 0
    return tokens * per + (1 << 20)


def compacts(v: View, live_tokens: int) -> bool:
    """Whether a training of view `v` writes a new raw file: removed documents hold at least
    RAW_COMPACT of its rows or of the documents (a share under DEAD_SHARE, so the training
    that DEAD_SHARE starts always compacts)."""
    dead_docs = v.docs - int(v.alive.sum())
    dead_rows = v.raw_tokens - live_tokens
    return dead_docs >= RAW_COMPACT * v.docs or dead_rows >= RAW_COMPACT * v.raw_tokens


def steps(v: View, docs: I64, weights: F32) -> Iterator[tuple[int, F32, I64, F32]]:
    """`docs` of view `v` (positions in it) ENCODE_TOKENS at a time: (how many of `docs` are
    done after this step, their raw tokens, offsets and weights)."""
    sizes = np.diff(v.raw_off)[docs]
    for lo, hi in doc_steps(sizes, ENCODE_TOKENS):
        part = docs[lo:hi]
        yield (
            hi,
            gather(v.raw, v.raw_off, part),
            offsets_of(sizes[lo:hi]),
            weights[ranges(v.raw_off, part)],
        )


def _copy_raw(nv: View, now: View, first: int) -> int:
    """Append the raw rows of the documents first, first + 1, ... of view `now` to the raw
    store of a training's new view `nv` (compacting: they follow what it holds); returns
    where the next copy starts (now.docs)."""
    docs = np.arange(first, now.docs, dtype=np.int64)
    for lo, hi in doc_steps(np.diff(now.raw_off)[docs], ENCODE_TOKENS):  # (bounded memory)
        nv.raw.append(gather(now.raw, now.raw_off, docs[lo:hi]))
    return now.docs
