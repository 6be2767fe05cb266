"""MultiVectorIndex: documents of token vectors, searched by MaxSim through a k-means codec.

This module owns the index's lifecycle (build, add, search, remove, train, checkpoint, open),
its state and its locking; a training's passes are in `training.py`, and the codec, token
reduction, layout, pipeline and files in the other sibling modules. Documents are named by the engine's int64 slots (never reused; remove wins, as for
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import InvalidArgument
from vecdb.index.base import Visible
from vecdb.index.multivector import persist, training
from vecdb.index.multivector.codec import Codec, Encoded
from vecdb.index.multivector.inputs import checked, queries_of, ranges
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
    empty_view,
    folded,
    grow,
    visible_mask,
    with_delta,
    with_docs,
)
from vecdb.kernels.bitpack import append_codes, code_bits
from vecdb.kernels.distance import single_threaded_blas

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Progress = Callable[[str, int, int], None]
Stores = RowFile | MemRows

REGROW = 4.0  # retrain when the live tokens reach this x the tokens of the last training
DEAD_SHARE = 0.5  # ... or when this share of the encoded documents is removed


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
        self._next: training.Next | None = None  # a training's codec, writes encoded with it too
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
        """Train a new codec on the live documents and encode them all, outside the mutation
        lock (searches read the previous view until the swap; writes go on and are taken
        over): `training.train`, whose docstring tells how."""
        training.train(self, progress)

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
