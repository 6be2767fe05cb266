"""Sixteen float32 lanes as one numba value: explicit SIMD for the lookup-table kernels.

This module owns `F16`, a numba type lowered to LLVM's ``<16 x float>`` (one AVX-512
register, two AVX2 ones), and the few operations on it that the MaxSim kernels need:
``vload`` / ``vstore`` 16 consecutive float32 of an array (any alignment), ``vadd``,
``vfma``, ``vmax``, ``vsplat``, ``vsum``, and the tests ``vany_gt`` (any lane greater) and
``vhmax`` (the largest lane). Why: a numba loop over 16 lanes whose trip count is a
runtime value is vectorised by LLVM for a 64-wide body (AVX-512, unrolled 4x) that never
runs for 16 lanes, and a loop over a compile-time 16 is unrolled to scalar code because
LLVM cannot prove the table rows and the accumulators do not alias (that form measured
1.6-1.9x slower; bench/RESULTS.md, "Issue 11: the default pipeline in 16-lane registers").
A value of this type lives in a register across a loop, so an accumulator costs no load or
store per table row. numba's on-disk cache is keyed on the file of the jitted function, not on
this module: after changing it, touch the modules whose kernels use it (`maxsim`, `bitpack`,
`kmeans`) or clear their `__pycache__`, or the cached kernels keep the old code.

Only usable inside numba-compiled code (the functions are numba intrinsics); no state. The
caller keeps every index in bounds: ``vload(a, i)`` reads ``a[i:i + 16]`` unchecked.
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

LANES = 16  # float32 lanes of one `F16` value


class F16Type(types.Type):
    """Numba type of 16 float32 lanes held as one LLVM vector."""

    def __init__(self) -> None:
        super().__init__(name="F16")


F16 = F16Type()
_VEC = ir.VectorType(ir.FloatType(), LANES)


def _intrinsic(fn: Callable[..., Any]) -> Any:
    """numba's `intrinsic`, typed as Any (called from numba code with its own arguments)."""
    return intrinsic(fn)


@register_default(F16Type)
class _F16Model(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: Any) -> None:
        super().__init__(dmm, fe_type, _VEC)  # type: ignore[no-untyped-call]


def _f32_array(a: Any) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.float32


def _ptr(context: Any, builder: Any, aryty: Any, ary: Any, idx: Any, idxty: Any) -> Any:
    """Pointer to a[idx] (flat C index into the array's data), as ``<16 x float>*``."""
    arr = context.make_array(aryty)(context, builder, ary)
    i = context.cast(builder, idx, idxty, types.intp)
    p = builder.gep(arr.data, [i], inbounds=True)
    return builder.bitcast(p, _VEC.as_pointer())


@_intrinsic
def vload(typingctx: Any, a: Any, i: Any) -> Any:
    """The 16 float32 ``a.flat[i:i + 16]`` of a C-contiguous float32 array."""
    if not (_f32_array(a) and a.layout == "C" and isinstance(i, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load(p, align=4)

    return F16(a, i), codegen


@_intrinsic
def vstore(typingctx: Any, a: Any, i: Any, v: Any) -> Any:
    """``a.flat[i:i + 16] = v`` on a C-contiguous float32 array."""
    if not (_f32_array(a) and a.layout == "C" and isinstance(i, types.Integer) and v == F16):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], p, align=4)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


@_intrinsic
def vadd(typingctx: Any, x: Any, y: Any) -> Any:
    """Lane-wise x + y."""
    if not (x == F16 and y == F16):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.fadd(args[0], args[1])

    return F16(x, y), codegen


@_intrinsic
def vfma(typingctx: Any, x: Any, y: Any, z: Any) -> Any:
    """Lane-wise x * y + z, fused (one rounding)."""
    if not (x == F16 and y == F16 and z == F16):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fnty = ir.FunctionType(_VEC, [_VEC, _VEC, _VEC])
        fma = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, fnty, "llvm.fma.v16f32"
        )
        return builder.call(fma, args)

    return F16(x, y, z), codegen


@_intrinsic
def vmax(typingctx: Any, x: Any, y: Any) -> Any:
    """Lane-wise max(x, y) (y where x is NaN)."""
    if not (x == F16 and y == F16):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        gt = builder.fcmp_ordered(">", args[0], args[1])
        return builder.select(gt, args[0], args[1])

    return F16(x, y), codegen


@_intrinsic
def vany_gt(typingctx: Any, x: Any, y: Any) -> Any:
    """Whether x > y in any lane."""
    if not (x == F16 and y == F16):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        gt = builder.fcmp_ordered(">", args[0], args[1])
        bits = builder.bitcast(gt, ir.IntType(LANES))
        return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(LANES), 0))

    return types.boolean(x, y), codegen


@_intrinsic
def vhmax(typingctx: Any, x: Any) -> Any:
    """The largest of the 16 lanes of x, as float32."""
    if not (x == F16):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        best = builder.extract_element(args[0], ir.Constant(ir.IntType(32), 0))
        for lane in range(1, LANES):
            e = builder.extract_element(args[0], ir.Constant(ir.IntType(32), lane))
            best = builder.select(builder.fcmp_ordered(">", e, best), e, best)
        return best

    return types.float32(x), codegen


@_intrinsic
def vsplat(typingctx: Any, x: Any) -> Any:
    """16 lanes of the float x."""
    if not isinstance(x, types.Float | types.Integer):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        s = context.cast(builder, args[0], sig.args[0], types.float32)
        v = cgutils.get_null_value(_VEC)  # type: ignore[no-untyped-call]
        v = builder.insert_element(v, s, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(v, v, mask)

    return F16(x), codegen


@_intrinsic
def vsum(typingctx: Any, x: Any) -> Any:
    """Sum of the 16 lanes of x, in lane order, as float32."""
    if not (x == F16):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        total = builder.extract_element(args[0], ir.Constant(ir.IntType(32), 0))
        for lane in range(1, LANES):
            e = builder.extract_element(args[0], ir.Constant(ir.IntType(32), lane))
            total = builder.fadd(total, e)
        return total

    return types.float32(x), codegen
