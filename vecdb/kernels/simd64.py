"""Eight uint64 lanes as one numba value: explicit SIMD for the 1-bit code scan.

This module owns `W8`, a numba type lowered to LLVM's ``<8 x i64>`` (one AVX-512 register,
two AVX2 ones), and the few operations the bit estimates need: ``wload`` 8 consecutive
uint64 of an array (any alignment), ``wstore`` its inverse, ``wand``, ``wadd``, ``wshl``
(by a constant), ``wcount`` (each lane's popcount: ``llvm.ctpop``, one VPOPCNTQ where the
CPU has AVX512-VPOPCNTDQ, a short sequence elsewhere) and ``wsum`` (the lanes' sum). Why: a code
of 384 bits is 6 words, and a numba loop over a runtime 6 words is vectorised by LLVM for
8 or more, so at 384 dimensions every popcount of the scan ran as scalar code (1-bit
estimates of MiniLM-384 entries, `kernels.bitscan`). Same conventions as `simd` (16 float32
lanes): only usable inside numba-compiled code; no state; the caller keeps every index in
bounds (``wload(a, i)`` reads ``a[i:i + 8]`` unchecked). numba's on-disk cache is keyed on
the file of the jitted function: after changing this module, touch the modules whose
kernels use it (`bitscan`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.datamodel import models
from numba.core.datamodel.registry import register_default
from numba.extending import intrinsic

WLANES = 8  # uint64 lanes of one `W8` value


class W8Type(types.Type):
    """Numba type of 8 uint64 lanes held as one LLVM vector."""

    def __init__(self) -> None:
        super().__init__(name="W8")


W8 = W8Type()
_I64 = ir.IntType(64)
_VEC = ir.VectorType(_I64, WLANES)


def _intrinsic(fn: Callable[..., Any]) -> Any:
    """numba's `intrinsic`, typed as Any (called from numba code with its own arguments)."""
    return intrinsic(fn)


def _llvm(builder: Any, name: str, ret: Any, x: Any) -> Any:
    """A call of the LLVM intrinsic `name` on one `<8 x i64>` value, returning `ret`."""
    fnty = ir.FunctionType(ret, [_VEC])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)  # type: ignore[no-untyped-call]
    return builder.call(fn, [x])


@register_default(W8Type)
class _W8Model(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: Any) -> None:
        super().__init__(dmm, fe_type, _VEC)  # type: ignore[no-untyped-call]


def _lanes_at(context: Any, builder: Any, sig: Any, args: Any) -> Any:
    """The `<8 x i64>` pointer to ``a.flat[i]`` of a call (a, i, ...) (no bounds check)."""
    arr = context.make_array(sig.args[0])(context, builder, args[0])
    idx = context.cast(builder, args[1], sig.args[1], types.intp)
    p = builder.gep(arr.data, [idx], inbounds=True)
    return builder.bitcast(p, _VEC.as_pointer())


def _lane_array(a: Any, i: Any) -> bool:
    """Whether (a, i) type a C-contiguous uint64 array and an integer index."""
    ok = isinstance(a, types.Array) and a.dtype == types.uint64 and a.layout == "C"
    return ok and isinstance(i, types.Integer)


@_intrinsic
def wload(typingctx: Any, a: Any, i: Any) -> Any:
    """The 8 uint64 ``a.flat[i:i + 8]`` of a C-contiguous uint64 array."""
    if not _lane_array(a, i):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.load(_lanes_at(context, builder, sig, args), align=8)

    return W8(a, i), codegen


@_intrinsic
def wstore(typingctx: Any, a: Any, i: Any, v: Any) -> Any:
    """``a.flat[i:i + 8] = v`` on a C-contiguous uint64 array."""
    if not (_lane_array(a, i) and v == W8):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        builder.store(args[2], _lanes_at(context, builder, sig, args), align=8)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


def _binary(op: str) -> Any:
    def typer(typingctx: Any, x: Any, y: Any) -> Any:
        if not (x == W8 and y == W8):
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return getattr(builder, op)(args[0], args[1])

        return W8(x, y), codegen

    return typer


wand = _intrinsic(_binary("and_"))
wand.__doc__ = "Lane-wise x & y."
wadd = _intrinsic(_binary("add"))
wadd.__doc__ = "Lane-wise x + y (mod 2^64)."


@_intrinsic
def wshl(typingctx: Any, x: Any, k: Any) -> Any:
    """Lane-wise x << k for a compile-time constant k (an integer literal)."""
    if not (x == W8 and isinstance(k, types.IntegerLiteral)):
        return None
    shift = int(k.literal_value)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.shl(args[0], ir.Constant(_VEC, [shift] * WLANES))

    return W8(x, k), codegen


@_intrinsic
def wcount(typingctx: Any, x: Any) -> Any:
    """Each lane's popcount."""
    if not (x == W8):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return _llvm(builder, "llvm.ctpop.v8i64", _VEC, args[0])

    return W8(x), codegen


@_intrinsic
def wzero(typingctx: Any) -> Any:
    """Eight zero lanes."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(_VEC, [0] * WLANES)

    return W8(), codegen


@_intrinsic
def wsum(typingctx: Any, x: Any) -> Any:
    """Sum of the 8 lanes of x, as uint64."""
    if not (x == W8):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return _llvm(builder, "llvm.vector.reduce.add.v8i64", _I64, args[0])

    return types.uint64(x), codegen
