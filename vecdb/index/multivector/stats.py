"""What a multi-vector index reports about itself: sizes, tiers, codes.

This module owns `stats()` (documents, tokens, codebook, bytes per token of every tier and
which of them the default search reads, IVF cell sizes) and the code export the benchmark
analyses. Reads a `View`; changes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.index.multivector.view import View
from vecdb.kernels.bitpack import code_bits, unpack_codes

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def view_stats(v: View, dim: int, build_params: dict[str, Any]) -> dict[str, Any]:
    """Sizes: documents, tokens, K, generation, bytes per token of each tier."""
    out: dict[str, Any] = {
        "kind": "multivector",
        "dim": dim,
        "docs": int(v.alive.sum()),
        "tokens": int(np.diff(v.raw_off)[v.alive].sum()),
        "encoded_tokens": int(np.diff(v.enc_off)[v.alive].sum()),
        "trained": v.codec is not None,
        "generation": v.codec.generation if v.codec is not None else 0,
        "K": v.codec.k if v.codec is not None else 0,
        "build_params": build_params,
        "bytes_per_token": {"raw": 4.0 * dim},
        "raw_bytes": int(v.raw.disk_bytes()),
    }
    if v.codec is not None:
        tiers = v.codec.bytes_per_token(code_bits(v.codec.k))
        out["bytes_per_token"].update(tiers)
        out["bytes_per_token"]["search_default"] = tiers["codes"] + (
            tiers["tier"] if v.codec.tier != "none" else tiers["residuals"]
        )
        out["postings_bytes"] = v.cell_docs.nbytes + v.delta_docs.nbytes
        sizes = np.diff(v.indptr)
        out["cell_docs_p50"] = float(np.percentile(sizes, 50)) if len(sizes) else 0.0
        out["cell_docs_p99"] = float(np.percentile(sizes, 99)) if len(sizes) else 0.0
    return out


def view_codes(v: View) -> tuple[I64, I64, I64, F32 | None]:
    """Codes of the encoded tokens, encoded offsets, slots and centroids (None untrained)."""
    if v.codec is None:
        return np.zeros(0, np.int64), v.enc_off.copy(), v.slots.copy(), None
    codes = unpack_codes(v.codes, code_bits(v.codec.k), v.encoded_tokens)
    return codes, v.enc_off.copy(), v.slots.copy(), v.codec.centroids.copy()
