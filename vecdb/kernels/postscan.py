"""Helpers of the SPANN scan (`vecdb.kernels.groupscan`): float16 widening and the thread count.

Pure functions on arrays (no I/O; one constant read from the CPU at import). numba has no
float16 type: `_half` widens one float16 bit pattern inside a kernel with the CPU's
conversion instruction where it has one (`HARDWARE_HALF`: x86 F16C, aarch64), else with
shifts, masks and a multiply; `_half_bits` is the shifts-and-masks form over an array and
`half_to_float` its numpy-facing form for tests and tools. All give the same value for every
half the writer stores (normal halves and zero). `search_threads` says how many threads a
batch gets.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

HALF_SCALE = np.float32(2.0**112)  # float16 bits moved into a float32 are 2^-112 too small


@nb.njit(cache=True, nogil=True)
def _half_bits(h, bits):  # type: ignore[no-untyped-def]
    """float16 bit patterns -> float32 patterns of the same value times 2^-112: sign in
    place, exponent and mantissa shifted (exact for normal halves and zero; the writer
    stores no subnormal, inf or NaN). Callers multiply by HALF_SCALE (exact). Shifts and masks only, so it vectorises."""
    for j in range(h.shape[0]):
        x = np.uint32(h[j])
        bits[j] = ((x & 0x8000) << 16) | ((x & 0x7FFF) << 13)


def half_to_float(h: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """Widen float16 bit patterns as the scan kernel does (for tests and tools)."""
    bits = np.empty(len(h), dtype=np.uint32)
    _half_bits(h, bits)
    out: npt.NDArray[np.float32] = bits.view(np.float32) * HALF_SCALE
    return out


@intrinsic
def _as_f32(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float32 whose bit pattern is the uint32 `bits` (an LLVM bitcast: free, and it
    vectorises, unlike a store and reload through a view)."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _fpext_half(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float32 value of the float16 whose bit pattern is the uint16 `bits` (an LLVM
    bitcast to half and fpext: one vcvtph2ps per vector with F16C; exact for every half)."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


def _has_f16c() -> bool:
    """Whether the host CPU converts halves in hardware (x86 F16C; aarch64 always does)."""
    try:
        import llvmlite.binding as llvm

        if llvm.get_process_triple().startswith(("aarch64", "arm64")):
            return True
        return bool(llvm.get_host_cpu_features().get("f16c", False))
    except Exception:  # noqa: BLE001 - no feature query: keep the portable widening
        return False


HARDWARE_HALF = _has_f16c()  # a compile-time constant of the kernels below


@nb.njit(cache=True, nogil=True, inline="always")
def _half(h):  # type: ignore[no-untyped-def]
    """The float32 value of float16 bits h (normal halves and zero, as `_half_bits`: the
    same value either way). With hardware conversion (F16C) one instruction per vector of
    halves instead of shifts, masks and a multiply (a GloVe-50 block scored in registers:
    about 1.3x faster in cache)."""
    if HARDWARE_HALF:
        return _fpext_half(np.uint16(h))  # type: ignore[call-arg]
    x = np.uint32(h)
    return _as_f32(np.uint32(((x & 0x8000) << 16) | ((x & 0x7FFF) << 13))) * HALF_SCALE  # type: ignore[call-arg]


PARALLEL_MIN_QUERIES = 16  # smaller batches run on the calling thread


def search_threads(nq: int) -> int:
    """Threads a search of `nq` queries uses: numba's count for the calling thread
    (`numba.set_num_threads`, the process's thread setting) once the batch repays handing
    chunks to other threads, else 1."""
    return nb.get_num_threads() if nq >= PARALLEL_MIN_QUERIES else 1
