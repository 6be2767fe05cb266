"""MultiVectorIndex: documents of token vectors, searched by MaxSim through a k-means codec.

This module owns the index's lifecycle (build, add, search, remove, train, checkpoint, open)
and its locking; the codec, token reduction, layout, pipeline and files are in the sibling
modules. Documents are named by the engine's int64 slots (never reused; remove wins, as for
dense indexes). Tokens arrive prepared (L2-normalised for cosine). Until the first training
the index holds only the raw float32 store and every search is exact MaxSim; `build` and
`train` encode every live document with a new codec (generation + 1), and compact removed
ones away once they hold RAW_COMPACT of the raw file (below that the file and the documents'
numbers are kept); `add` after that encodes with the current codec. Mutations are serialised
by a lock and published by swapping an immutable `View`; searches never wait for a training.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import InvalidArgument
from vecdb.index import room
from vecdb.index.base import Visible
from vecdb.index.multivector import persist
from vecdb.index.multivector.codec import QUANTILE_SAMPLE, Codec, Encoded, residual_width, train
from vecdb.index.multivector.inputs import checked, doc_steps, gather, queries_of, ranges
from vecdb.index.multivector.params import MVBuildParams, MVSearchParams, auto_k
from vecdb.index.multivector.reduce import offsets_of, pool, prune, salience, sizes_of
from vecdb.index.multivector.rowfile import MemRows, RowFile
from vecdb.index.multivector.search import (
    ScratchPool,
    exact_scores,
    search_batch,
    top,
    uses_blas,
)
from vecdb.index.multivector.stats import view_codes, view_stats
from vecdb.index.multivector.view import (
    DELTA_FOLD_MIN,
    MembershipCache,
    View,
    cell_pairs,
    csr,
    empty_view,
    folded,
    grow,
    visible_mask,
    with_delta,
    with_docs,
)
from vecdb.index.spann.killpoints import kill_point
from vecdb.kernels.bitpack import append_codes, code_bits, pack_codes
from vecdb.kernels.distance import single_threaded_blas
from vecdb.kernels.kmeans import DEFAULT_SAMPLE_PER_CLUSTER, MIN_SAMPLE

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Progress = Callable[[str, int, int], None]
Stores = RowFile | MemRows

REGROW = 4.0  # retrain when the live tokens reach this x the tokens of the last training
DEAD_SHARE = 0.5  # ... or when this share of the encoded documents is removed
TRAIN_GATHER_BYTES = 512 << 20  # a training gathers every live token up to this (float32)
ENCODE_TOKENS = 262_144  # past it: tokens a step of the encoding gathers
RAW_COMPACT = 0.25  # a training rewrites the raw file when removed documents hold this share
CATCH_UP_ROUNDS = 4  # a training takes over what arrived during it in up to this many rounds
CATCH_UP_TOKENS = ENCODE_TOKENS  # (fewer once under this many tokens wait), then in a final
# one during which the writers encode their own documents with its codec too (`_Next`)


@dataclass
class _Next:
    """A training's codec once trained, before its view is published: every write from
    document `first` on is encoded with it too, by the writer (`parts`, in document order:
    (encoded tokens, their offsets per document)), so what the training has to take over
    stops growing there."""

    codec: Codec
    first: int
    parts: list[tuple[Encoded, I64]] = field(default_factory=list)


class MultiVectorIndex:
    """A multi-vector (late-interaction) index over documents of `dim`-d tokens."""

    def __init__(
        self,
        dim: int,
        directory: Path | None = None,
        params: Mapping[str, Any] | None = None,
        metric: str = "cosine",
    ) -> None:
        self.dim = dim  # token dimension
        self.unit = str(metric) == "cosine"  # tokens are unit vectors: so are centroids, pools
        self.directory = directory  # files live here (None: in memory)
        self.params = MVBuildParams.parse(params)  # build parameters
        self._lock = threading.RLock()  # serialises mutations (searches take none)
        self._train_lock = threading.RLock()  # one training at a time (build's included)
        self._removed: set[int] = set()  # slots ever removed (remove wins)
        self._doc_of: dict[int, int] = {}  # slot -> document number
        self._weights = np.zeros(0, np.float32)  # raw-token salience (NaN = none given)
        self._trained_tokens = 0  # live tokens at the last training
        self._added_sq = 0.0  # squared residual of tokens encoded since ...
        self._added_n = 0  # ... and their count (drift check)
        self._files = persist.Files()  # names of the current files
        self.applied_seq = 0  # engine sequence of the last checkpoint
        self._v: View = empty_view(MemRows(np.float32, dim))  # what searches read
        self._scratch = ScratchPool()  # searches' stamp arrays, reused
        self._members = MembershipCache()  # a tenant bitmap's documents, per view
        self._next: _Next | None = None  # a training's codec, writes encoded with it too
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            if not persist.open_into(self, directory):
                self._v = empty_view(self._new_raw())

    # --- build --------------------------------------------------------------------------------

    def build(
        self,
        doc_ids: npt.ArrayLike,
        tokens: F32,
        offsets: npt.ArrayLike,
        weights: F32 | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Replace the content with these documents and train a codec on them. A training
        under way finishes first (its swap would mix the old content into the new)."""
        with self._train_lock:
            with self._lock:
                old = self._v
                self._removed.clear()
                self._doc_of.clear()
                self._weights = np.zeros(0, np.float32)
                self._v = empty_view(self._new_raw())
                persist.retire(self, old)
                self._v = self._append_raw(self._v, doc_ids, tokens, offsets, weights)[0]
            self.train(progress)

    def train(self, progress: Progress | None = None) -> None:
        """Train a new codec on the live documents and encode them all. A no-op without live
        tokens. The raw file is kept unless removed documents hold RAW_COMPACT of it
        (`_compacts`); then the live documents' rows are written to a new one and numbered
        again. The work runs outside the mutation lock and searches read the previous view
        until the swap. Documents added meanwhile are encoded with the new codec in rounds
        outside the lock, each taking what arrived during the one before; from the start of
        the last round (`_Next`) each write encodes its own documents with the new codec as
        well as the current one, so a load faster than the encoding slows to it instead of
        leaving a backlog for the swap, which only appends what the writers encoded;
        removals made meanwhile are applied to it. Up to what the codebook's training
        samples (or TRAIN_GATHER_BYTES of tokens) every live token is gathered at once; past
        that the codebook is trained on that many random tokens (`_sample`) and the
        documents are encoded ENCODE_TOKENS at a time, so memory follows the sample, not
        the collection."""
        with self._train_lock:
            with self._lock:
                v = self._v
                live = np.flatnonzero(v.alive)
                weights_all = self._weights
            sizes = np.diff(v.raw_off)[live]
            total = int(sizes.sum())
            if total == 0:
                return
            writes = train_need(self.params, self.dim, total, _compacts(v, total))
            room.ensure(self.directory, writes, f"the codebook training of {total:,} tokens")
            if progress:
                progress("gather", 0, len(live))
            need = self._training_tokens(total)
            pick = None if total <= need else self._sample(v, live, sizes, weights_all, need)
            if pick is None:
                tokens = gather(v.raw, v.raw_off, live)
                weights = weights_all[ranges(v.raw_off, live)]
                # Pass 1: pooled tokens are what the codebook sees.
                enc_tok, enc_off, enc_w = self._pooled(tokens, offsets_of(sizes), weights)
            else:
                tokens, enc_tok = pick
            kill_point("mv_train_sample")
            if progress:
                progress("train", 0, 1)
            gen = (v.codec.generation if v.codec is not None else 0) + 1
            expect = total * len(enc_tok) // max(1, len(tokens))  # the pooled tokens of all
            peak = None
            if pick is not None and self.params.rerank_tier == "int8":  # scales cover all
                peak = np.zeros(self.dim, np.float32)
                for hi, tok, offs, w in steps(v, live, weights_all):
                    np.maximum(peak, np.abs(self._pooled(tok, offs, w)[0]).max(axis=0), out=peak)
                    if progress:
                        progress("scales", hi, len(live))
            codec, codes = train(enc_tok, self.params, gen, self.unit, expect, peak, progress)
            kill_point("mv_train_codebook")
            if progress:
                progress("train", 1, 1)
            # everything at hand (one step of pass 2, the training's codes reused) or not
            at_hand = [] if pick is not None else [tokens, enc_tok, enc_off, enc_w, codes]
            del tokens, enc_tok, codes, pick
            try:
                self._encode_and_swap(v, live, total, weights_all, codec, at_hand, progress)
            finally:
                with self._lock:
                    self._next = None
            kill_point("mv_train_swapped")
            if progress:
                progress("gather", len(live), len(live))

    def _encode_and_swap(
        self,
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
        compact = _compacts(v, total)
        raw = self._new_raw() if compact else v.raw
        into = raw if compact else None  # (the raw rows are written again only then)
        tier = self._new_tier(codec)
        if progress:
            progress("encode", 0, len(live))
        if at_hand:  # one step, the training's codes reused
            parts = [self._encode_step(codec, into, tier, *at_hand)]
            at_hand.clear()
        else:
            parts = []
            for hi, tok, offs, w in steps(v, live, weights_all):
                et, eo, ew = self._pooled(tok, offs, w)
                parts.append(self._encode_step(codec, into, tier, tok, et, eo, ew, None))
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
        # as well (`_Next`); the swap, under the lock, only appends those (their raw rows
        # copied first outside it when compacting). Searches read the previous
        # view until then.
        taken, sq, n = v.docs, 0.0, 0  # documents of the live numbering taken over
        for rnd in range(CATCH_UP_ROUNDS + 1):
            with self._lock:
                now, weights_now = self._v, self._weights
                waiting = int(now.raw_off[-1] - now.raw_off[taken])
                last = rnd == CATCH_UP_ROUNDS or waiting < CATCH_UP_TOKENS
                if last:  # every later write is encoded with the new codec by the writer
                    self._next = _Next(codec, now.docs)
            nv, sq, n = self._take_over(nv, now, taken, weights_now, compact, sq, n)
            taken = now.docs
            if last:
                break
        copied = taken
        if compact:
            with self._lock:
                now = self._v
            copied = _copy_raw(nv, now, copied)
        with self._lock:
            now, nxt = self._v, self._next
            assert nxt is not None and nxt.first == taken
            if compact:
                _copy_raw(nv, now, copied)
            nv, s2, n2 = self._with_next(nv, now, nxt)
            if compact:  # documents numbered again
                self._weights = np.concatenate(
                    [
                        weights_all[ranges(v.raw_off, live)],
                        self._weights[v.raw_tokens : now.raw_tokens],
                    ]
                )
                self._doc_of = {int(s): i for i, s in enumerate(nv.slots)}
            self._trained_tokens = total
            self._added_sq, self._added_n = sq + s2, n + n2
            for s in self._removed & self._doc_of.keys():  # removed while we trained
                nv.alive[self._doc_of[s]] = False
            self._v = nv
            persist.retire(self, v, raw=compact)
        if progress:
            progress("encode", len(live), len(live))

    def _training_tokens(self, total: int) -> int:
        """Tokens a training gathers: every live one up to what the k-means and the residual
        codebooks sample anyway, or TRAIN_GATHER_BYTES of them, whichever is more."""
        k = self.params.K or auto_k(total)
        per_k = self.params.train_sample or max(MIN_SAMPLE, DEFAULT_SAMPLE_PER_CLUSTER * k)
        return max(per_k, QUANTILE_SAMPLE, TRAIN_GATHER_BYTES // (4 * self.dim))

    def _sample(
        self, v: View, live: I64, sizes: I64, weights_all: F32, need: int
    ) -> tuple[F32, F32]:
        """(raw, pooled) training tokens, about `need` of them: random tokens of every live
        document, or with pooling on (it works on whole documents) random whole documents."""
        rng = np.random.default_rng(self.params.seed)
        if self.params.pool <= 0:  # token t of the live ones: its document's start + rank
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
        return tokens, self._pooled(tokens, offsets_of(sizes[pick]), weights)[0]

    def _encode_step(
        self,
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
        enc_tok, enc_off, codes = self._pruned(enc_tok, enc_off, enc_w, codes, codec)
        encoded = codec.encode(enc_tok, codes)
        if raw is not None:
            raw.append(tokens)
        if tier is not None:
            tier.append(encoded.tier)
        return encoded.codes, encoded.residuals, encoded.signs, sizes_of(enc_off)

    # --- add ----------------------------------------------------------------------------------

    def add(
        self,
        doc_ids: npt.ArrayLike,
        tokens: F32,
        offsets: npt.ArrayLike,
        weights: F32 | None = None,
    ) -> None:
        """Insert documents (encoded with the current codec once there is one). Documents
        already present or ever removed are skipped (idempotent under replay)."""
        with self._lock:
            first_doc = self._v.docs
            v, added = self._append_raw(self._v, doc_ids, tokens, offsets, weights)
            if added is not None:
                v, sq, n = self._encoded(v, first_doc, *added)
                self._added_sq += sq
                self._added_n += n
                if self._next is not None:  # a training's codec, its view not published yet
                    self._next.parts.append(self._encode_docs(self._next.codec, *added))
            self._v = v

    def _encoded(
        self, v: View, first_doc: int, toks: F32, offs: I64, w: F32
    ) -> tuple[View, float, int]:
        """`v` with its last documents, first_doc on (raw `toks` by `offs`, not encoded yet),
        encoded with its codec (as they are without one); and the summed squared residual
        and count of the tokens encoded (the drift check's)."""
        if v.codec is None:
            return v, 0.0, 0
        encoded, enc_off = self._encode_docs(v.codec, toks, offs, w)
        nv = self._append_encoded(v, encoded, enc_off, first_doc)
        n = len(encoded.codes)
        return nv, encoded.sq_residual * n, n

    def _encode_docs(self, codec: Codec, toks: F32, offs: I64, w: F32) -> tuple[Encoded, I64]:
        """Documents (raw `toks` by `offs`, weights `w`) pooled, pruned and encoded with
        `codec`: (the encoded tokens, their offsets per document)."""
        enc_tok, enc_off, enc_w = self._pooled(toks, offs, w)
        codes = codec.assign(enc_tok)
        enc_tok, enc_off, codes = self._pruned(enc_tok, enc_off, enc_w, codes, codec)
        return codec.encode(enc_tok, codes), enc_off

    def _with_next(self, nv: View, now: View, nxt: _Next) -> tuple[View, float, int]:
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
        return self._append_encoded(nv, joined, enc_off, first_doc), sq, n

    def _take_over(
        self,
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
            nv, s, m = self._encoded(nv, first_doc, tok, offs, w)
            sq, n = sq + s, n + m
        return nv, sq, n

    def _append_encoded(self, v: View, e: Encoded, enc_off: I64, first_doc: int) -> View:
        """`v` with encoded tokens `e` of its last documents, first_doc on (ranges
        `enc_off`), appended."""
        assert v.codec is not None
        bits = code_bits(v.codec.k)
        n_old, n = v.encoded_tokens, len(e.codes)
        codes = append_codes(v.codes, n_old, e.codes, bits)
        residuals = grow(v.residuals, n_old, n)
        residuals[n_old : n_old + n] = e.residuals
        signs = grow(v.signs, n_old, n)
        signs[n_old : n_old + n] = e.signs
        if v.tier is not None:
            v.tier.append(e.tier)
        cells, docs = cell_pairs(e.codes, enc_off, first_doc)
        nv = replace(
            v,
            # the new documents' placeholder (empty) ranges are replaced by their real ones
            enc_off=np.concatenate([v.enc_off[: first_doc + 1], enc_off[1:] + n_old]),
            codes=codes,
            residuals=residuals,
            signs=signs,
        )
        return with_delta(nv, cells, docs)

    def _append_raw(
        self,
        v: View,
        doc_ids: npt.ArrayLike,
        tokens: F32,
        offsets: npt.ArrayLike,
        weights: F32 | None,
    ) -> tuple[View, tuple[F32, I64, F32] | None]:
        """Validate new documents and append them to `v`'s raw store and the document table:
        (the view with them, not encoded yet; the new ones (tokens, offsets, weights) or None
        if all were skipped)."""
        ids, toks, offs, w = checked(self.dim, doc_ids, tokens, offsets, weights)
        keep = np.array(
            [int(s) not in self._removed and int(s) not in self._doc_of for s in ids], bool
        )
        if not keep.any():
            return v, None
        if not keep.all():
            idx = ranges(offs, np.flatnonzero(keep))
            toks, w = toks[idx], w[idx]
            offs, ids = offsets_of(sizes_of(offs)[keep]), ids[keep]
        first = v.raw.append(toks)
        assert first == v.raw_tokens, (first, v.raw_tokens)  # the view covers the whole file
        self._weights = grow(self._weights, v.raw_tokens, len(w))  # capacity: no O(N) copy
        self._weights[v.raw_tokens : v.raw_tokens + len(w)] = w
        for i, s in enumerate(ids):
            self._doc_of[int(s)] = v.docs + i
        return with_docs(v, ids, offs, np.ones(len(ids), bool)), (toks, offs, w)

    def _pooled(self, tokens: F32, offsets: I64, weights: F32) -> tuple[F32, I64, F32]:
        if self.params.pool > 0:
            return pool(tokens, offsets, weights, self.params.pool, self.unit)
        return tokens, offsets, weights

    def _pruned(
        self, tokens: F32, offsets: I64, weights: F32, codes: I64, codec: Codec
    ) -> tuple[F32, I64, I64]:
        if self.params.doc_prune >= 1.0:
            return tokens, offsets, codes
        keep = prune(offsets, salience(weights, codes, codec.idf), self.params.doc_prune)
        doc = np.repeat(np.arange(len(offsets) - 1), sizes_of(offsets))
        return (
            tokens[keep],
            offsets_of(np.bincount(doc[keep], minlength=len(offsets) - 1)),
            codes[keep],
        )

    # --- search -------------------------------------------------------------------------------

    def search(
        self,
        queries: Sequence[F32] | F32,
        k: int,
        params: MVSearchParams | Mapping[str, Any] | None = None,
        visible: Visible | npt.ArrayLike | None = None,
    ) -> tuple[I64, F32, dict[str, float]]:
        """Top-k documents of each query by (approximate) MaxSim: slots (nq, k) padded -1,
        scores (nq, k) padded -inf, higher is better; stats summed over the queries. `params`
        already parsed (the engine checks them before any work) are used as they are;
        `visible` restricts the documents as `view.visible_mask` reads it."""
        p = params if isinstance(params, MVSearchParams) else MVSearchParams.parse(params)
        if not self.params.sign_bits and (p.hamming_keep or p.rerank == "signs"):
            name = "hamming_keep" if p.hamming_keep else "rerank"
            raise InvalidArgument(
                f"params.{name} reads sign bits: the collection needs index_params "
                "sign_bits=true (off by default)",
                field=f"params.{name}",
            )
        qs = queries_of(self.dim, queries)
        v = self._v
        live = visible_mask(v, visible, self._members)
        # a tenant's own cell lists (Curator's layout), kept per (bitmap, CSR); asked for
        # only if the search probes cells
        lists = (partial(self._members.lists, visible, v) if isinstance(visible, Visible)
                 else None)  # fmt: skip
        # BLAS's spinning pool starves numba's (kernels.distance): held to one thread when
        # the search may wake it
        hold = single_threaded_blas() if uses_blas(p, v) else contextlib.nullcontext()
        with hold:
            docs, scores, st = search_batch(qs, k, p, v, live, v.raw, v.tier, self._scratch,
                                            lists)  # fmt: skip
        if len(v.slots) == 0:  # never held a document: every row is padding
            return np.full(docs.shape, -1, np.int64), scores, st
        return np.where(docs >= 0, v.slots[np.maximum(docs, 0)], -1), scores, st

    def exact(
        self, queries: Sequence[F32] | F32, k: int, visible: Visible | npt.ArrayLike | None = None
    ) -> tuple[I64, F32]:
        """Exact MaxSim top-k over every live document's raw tokens."""
        qs = queries_of(self.dim, queries)
        v = self._v
        live = np.flatnonzero(visible_mask(v, visible))
        ids = np.full((len(qs), k), -1, np.int64)
        scores = np.full((len(qs), k), -np.inf, np.float32)
        for i, q in enumerate(qs):
            with single_threaded_blas():
                scores_i = exact_scores(q, v.raw, v, live)
            d, s = top(live, scores_i, k)
            ids[i, : len(d)], scores[i, : len(s)] = v.slots[d], s
        return ids, scores

    # --- remove -------------------------------------------------------------------------------

    def remove(self, doc_ids: npt.ArrayLike) -> None:
        """Remove documents; unknown ones are remembered as removed (remove wins)."""
        with self._lock:
            for s in np.asarray(doc_ids, np.int64).ravel().tolist():
                self._removed.add(s)
                doc = self._doc_of.get(s)
                if doc is not None:
                    self._v.alive[doc] = False

    # --- maintenance and files ----------------------------------------------------------------

    def needs_training(self) -> bool:
        """Whether the worker should (re)train: enough tokens for a first codec, the data has
        grown or drifted past the codec, or many encoded documents are gone."""
        v = self._v
        live_tokens = int(np.diff(v.raw_off)[v.alive].sum())
        if v.codec is None:
            return live_tokens >= self.params.min_train_tokens
        if (
            self.params.K == 0
            and auto_k(live_tokens) > v.codec.k
            and live_tokens >= REGROW * self._trained_tokens
        ):
            return True
        if self._added_n >= 0.1 * self._trained_tokens and self._added_sq > (
            self.params.drift * v.codec.sq_residual * self._added_n
        ):
            return True
        return v.docs > 0 and (1.0 - v.alive.mean()) >= DEAD_SHARE

    def trained(self) -> bool:
        """Whether a codec has been published (searches go through it, not exact MaxSim)."""
        return self._v.codec is not None

    def live_bytes(self) -> int:
        """Bytes of the live documents' raw float32 tokens."""
        v = self._v
        return int(np.diff(v.raw_off)[v.alive].sum()) * 4 * self.dim

    def checkpoint(self, applied_seq: int) -> None:
        """Make everything so far durable, recording `applied_seq`; the pairs added to the
        cell lists since they were built are folded into them first (`DELTA_FOLD_MIN`)."""
        with self._lock:
            self._v = folded(self._v, DELTA_FOLD_MIN)
            self.applied_seq = applied_seq
            if self.directory is not None:
                persist.save(self, self.directory)

    def stats(self) -> dict[str, Any]:
        """Sizes: documents, tokens, K, generation, bytes per token of each tier."""
        return view_stats(self._v, self.dim, self.params.as_dict())

    def codes(self) -> tuple[I64, I64, I64, F32 | None]:
        """(centroid code of every encoded token, encoded offsets (D+1,), slots (D,), the
        centroids (K, d) or None untrained), for analyses such as Hamming over centroid ids
        in the benchmark. Removed documents are included."""
        return view_codes(self._v)

    def __len__(self) -> int:
        return int(self._v.alive.sum())

    def close(self) -> None:
        with self._lock:
            self._v.raw.close()
            if self._v.tier is not None:
                self._v.tier.close()

    # --- files --------------------------------------------------------------------------------

    def _new_raw(self) -> Stores:
        if self.directory is None:
            return MemRows(np.float32, self.dim)
        return persist.new_rows(self, "raw", np.float32, self.dim)

    def _new_tier(self, codec: Codec) -> Stores | None:
        if codec.tier == "none":
            return None
        dtype = np.int8 if codec.tier == "int8" else np.float16
        if self.directory is None:
            return MemRows(dtype, self.dim)
        return persist.new_rows(self, "tier", dtype, self.dim)


def train_need(p: MVBuildParams, dim: int, tokens: int, compact: bool) -> int:
    """An upper bound of the bytes a training of `tokens` live tokens writes (`room`): per
    token its code (at most 4 bytes), residual and sign bits in the next state file, its
    rerank-tier row, and when it compacts (`_compacts`) its float32 row again; 1 MiB for
    the codebook and the rest of the state file."""
    per = 4 + (residual_width(dim, p.residual_bits, p.residual_bytes) if p.residual_bits else 0)
    per += -(-dim // 8) if p.sign_bits else 0
    per += {"int8": 1, "float16": 2}.get(p.rerank_tier, 0) * dim
    per += 4 * dim if compact else 0
    return tokens * per + (1 << 20)


def _compacts(v: View, live_tokens: int) -> bool:
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
