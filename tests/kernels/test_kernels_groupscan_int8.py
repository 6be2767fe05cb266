"""The int8 posting scan scored in registers (`groupscan._score_int8`, a block read by one
query) against the decode-then-score path (a block shared by several queries of a batch):
every distance bit for bit the same, for l2, ip and cosine, at dims that do and do not fill
the passes of four; and both against a float64 numpy oracle of the decoded components."""

from __future__ import annotations

import numpy as np
import pytest

from vecdb.kernels.groupscan import pair_order, scan_pairs
from vecdb.kernels.posting import (
    METRIC_COSINE,
    METRIC_IP,
    METRIC_L2,
    NO_VISIBLE,
    SLOT_BYTES,
    SLOT_DTYPE,
    block_layout,
)

METRICS = {"l2": METRIC_L2, "ip": METRIC_IP, "cosine": METRIC_COSINE}


def _blocks(rng: np.random.Generator, dim: int, counts: list[int]):  # type: ignore[no-untyped-def]
    """int8 blocks laid out as the posting file lays them out (slots at +64, versions after
    them, [dim][cap] codes), distinct slots; returns the buffer, offsets, counts, the
    quantizer, each slot's decoded float32 vector and the slot versions."""
    n_slots = sum(counts)
    qoff = rng.uniform(-2, 0, dim).astype(np.float32)
    qscale = rng.uniform(0.001, 0.03, dim).astype(np.float32)
    codes = rng.integers(0, 256, (n_slots, dim)).astype(np.uint8)
    decoded = qoff[None, :] + qscale[None, :] * codes.astype(np.float32)  # the scan's expression
    sizes = [block_layout(c, dim, 1)[2] for c in counts]
    starts = np.concatenate(([0], np.cumsum([-(-s // 64) * 64 for s in sizes])))
    u8 = np.zeros(int(starts[-1]) + 64, np.uint8)
    first = 0
    for o, c in zip(starts[:-1].tolist(), counts, strict=True):
        cap, voff, _ = block_layout(c, dim, 1)
        slots = np.arange(first, first + c, dtype=np.int64)
        u8[o + 64 : o + 64 + SLOT_BYTES * c] = slots.astype(SLOT_DTYPE).view(np.uint8)
        u8[o + 64 + SLOT_BYTES * cap : o + 64 + SLOT_BYTES * cap + c] = 1
        u8[o + voff : o + voff + dim * cap].reshape(dim, cap)[:, :c] = codes[slots].T
        first += c
    off = starts[:-1].astype(np.int64)
    cnt = np.asarray(counts, np.int64)
    return u8, off, cnt, qoff, qscale, decoded, np.ones(n_slots, np.uint8)


def _scan(u8, off, cnt, qoff, qscale, versions, queries, reads, metric, k):  # type: ignore[no-untyped-def]
    """scan_pairs over CSR reads (query i reads blocks reads[i]) on one thread."""
    ptr = np.concatenate(([0], np.cumsum([len(r) for r in reads]))).astype(np.int64)
    flat = np.concatenate([np.asarray(r, np.int64) for r in reads])
    o, c = off[flat], cnt[flat]
    order, pq = pair_order(ptr, o)
    ids = np.full((len(queries), k), -1, np.int64)
    d = np.full((len(queries), k), np.inf, np.float32)
    views = (u8, u8.view(SLOT_DTYPE), u8.view(np.float32), u8.view(np.uint16))
    dim = queries.shape[1]
    scan_pairs(
        *views, dim, 1, qoff, qscale, o, c, order, pq, 0, len(order), queries,
        versions, NO_VISIBLE, False, METRICS[metric], ids, d,
    )  # fmt: skip
    return ids, d


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("dim", [1, 3, 4, 7, 16, 50])
def test_int8_in_registers_equals_decoded_bit_for_bit(metric: str, dim: int) -> None:
    """Each query alone (every block read by one query: scored from the codes in registers)
    and the three in one batch (every block shared: decoded once, then scored) give the same
    slots and the same float32 distances for every entry; the distances match the oracle."""
    rng = np.random.default_rng(dim * 7 + len(metric))
    counts = [1, 5, 17, 40, 64, 65, 130]
    u8, off, cnt, qoff, qscale, decoded, versions = _blocks(rng, dim, counts)
    queries = rng.uniform(-2, 1, (3, dim)).astype(np.float32)
    reads = [list(range(len(counts)))] * 3
    k = sum(counts)  # every entry comes back: every distance is compared
    together = _scan(u8, off, cnt, qoff, qscale, versions, queries, reads, metric, k)
    for i in range(3):
        alone = _scan(
            u8, off, cnt, qoff, qscale, versions, queries[i : i + 1], reads[:1], metric, k
        )
        np.testing.assert_array_equal(alone[0][0], together[0][i])
        np.testing.assert_array_equal(alone[1][0], together[1][i])
        x, q = decoded.astype(np.float64), queries[i].astype(np.float64)
        want = ((x - q) ** 2).sum(1) if metric == "l2" else -(x @ q)
        want = want + 1.0 if metric == "cosine" else want
        got = together[0][i]
        np.testing.assert_allclose(together[1][i], want[got], rtol=1e-5, atol=1e-4)
