"""The per-dimension scalar quantizer of int8 posting files (moved out of `postings`,
which re-exports it). Owns the encoding x ~ offset + scale * code; no file, no I/O.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


class Quantizer:
    """Per-dimension scalar quantizer of int8 postings: x ~ offset + scale * code, code in
    0..255, fitted to the data of a bulk build (later vectors are clipped to its range)."""

    def __init__(self, offset: F32, scale: F32) -> None:
        self.offset = np.ascontiguousarray(offset, dtype=np.float32)  # per-dimension minimum
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)  # per-dimension step

    @classmethod
    def fit(cls, vectors: F32) -> Quantizer:
        lo, hi = vectors.min(0), vectors.max(0)
        return cls(lo, np.maximum(hi - lo, 1e-12) / 255.0)

    def encode(self, vectors: F32) -> U8:
        codes = np.rint((vectors - self.offset) / self.scale)
        out: U8 = np.clip(codes, 0, 255).astype(np.uint8)
        return out

    def decode(self, codes: U8) -> F32:
        out: F32 = (self.offset + self.scale * codes.astype(np.float32)).astype(np.float32)
        return out

    def to_bytes(self) -> bytes:
        return self.offset.tobytes() + self.scale.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, dim: int) -> Quantizer:
        arr = np.frombuffer(data, dtype=np.float32)
        return cls(arr[:dim].copy(), arr[dim:].copy())
