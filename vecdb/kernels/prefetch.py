"""Software prefetch for the SPANN scan kernels (`vecdb.kernels.groupscan`): hints that bring
posting blocks toward the CPU while earlier ones are scored.

Pure functions on arrays (no I/O, no globals); none changes a result. `_prefetch` is the one
instruction (llvm.prefetch); `_prefetch_pair` hints a whole block, `_span`, `_share` and
`_prefetch_run` let a scoring loop hint a block a share at a time (a steady stream the CPU's
miss queue keeps, where a whole block hinted at once mostly overflows it and is dropped);
`_next_run` finds the next distinct block of a block-ordered pair list.
"""

from __future__ import annotations

import numba as nb
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from vecdb.kernels.posting import _layout, body_bytes


@intrinsic
def _prefetch(typingctx, arr, at):  # type: ignore[no-untyped-def]
    """Hint the CPU to bring u8[at]'s cache line in (llvm.prefetch: read, keep in all
    levels); no effect on results, never faults."""
    sig = types.void(arr, types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")  # type: ignore[no-untyped-call]
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True, inline="always")
def _prefetch_block(u8, o, nbytes):  # type: ignore[no-untyped-def]
    """Prefetch the block at o (nbytes long), one hint per 64-byte line."""
    end = min(o + nbytes, u8.shape[0])
    for at in range(o, end, 64):
        _prefetch(u8, at)  # type: ignore[call-arg]


@nb.njit(cache=True, nogil=True, inline="always")
def _next_run(off, order, p, hi):  # type: ignore[no-untyped-def]
    """The first pair after p (up to hi) reading a block other than pair p's."""
    if p >= hi:
        return hi
    o = off[order[p]]
    p += 1
    while p < hi and off[order[p]] == o:
        p += 1
    return p


@nb.njit(cache=True, nogil=True, inline="always")
def _prefetch_pair(u8, off, cnt, order, p, hi, dim, width):  # type: ignore[no-untyped-def]
    """Prefetch pair p's block, if p < hi."""
    if p < hi:
        b = order[p]
        cap, voff = _layout(cnt[b])
        _prefetch_block(u8, off[b], voff + body_bytes(width, dim, cap))


@nb.njit(cache=True, nogil=True, inline="always")
def _span(u8, off, cnt, order, p, hi, dim, width):  # type: ignore[no-untyped-def]
    """Byte range [start, end) of pair p's block in u8 (empty if p >= hi)."""
    if p >= hi:
        return 0, 0
    b = order[p]
    cap, voff = _layout(cnt[b])
    return off[b], min(off[b] + voff + body_bytes(width, dim, cap), u8.shape[0])


@nb.njit(cache=True, nogil=True, inline="always")
def _share(start, end, parts):  # type: ignore[no-untyped-def]
    """Bytes (whole 64-byte lines) of one of `parts` equal shares of [start, end)."""
    return ((end - start + 63) // 64 + parts - 1) // parts * 64


@nb.njit(cache=True, nogil=True, inline="always")
def _prefetch_run(u8, at, per, end):  # type: ignore[no-untyped-def]
    """Prefetch the lines of u8[at : min(at + per, end)]; return where the next run starts."""
    stop = min(at + per, end)
    while at < stop:
        _prefetch(u8, at)  # type: ignore[call-arg]
        at += 64
    return stop
