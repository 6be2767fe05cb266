"""`borrow(a)`: the same array without its reference-counted owner, for a kernel's hot loops.

Every array numba slices or passes on in a loop (a row `x[i]`, a span `a[lo:hi]`, an argument
of an inlined helper) takes an atomic increment of its owner's reference count and gives it
back afterwards, unless numba's pruning pass can pair the two up. An atomic costs ~10 ns
uncontended on the 2026 Xeon VM this was measured on, and far more when two threads touch the
same owner (the posting map, the query matrix, the result table). A borrowed array has no
owner (its meminfo is null), so the increments its views take test a null pointer and return.

Only for a kernel's own use of its arguments: a borrowed array must not outlive the array it
borrows from (do not return it, store it or hand it to a caller), which holds for any local
of a kernel whose argument stays referenced by the caller for the call.
"""

from __future__ import annotations

from typing import Any

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _borrow(typingctx: Any, arr: Any) -> Any:
    """`arr`'s data, shape and strides with no owner (see the module docstring)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        src = context.make_array(sig.args[0])(context, builder, args[0])
        out = context.make_array(sig.return_type)(context, builder)
        out.meminfo = cgutils.get_null_value(out.meminfo.type)  # type: ignore[no-untyped-call]
        out.parent = cgutils.get_null_value(out.parent.type)  # type: ignore[no-untyped-call]
        out.nitems = src.nitems
        out.itemsize = src.itemsize
        out.data = src.data
        out.shape = src.shape
        out.strides = src.strides
        return out._getvalue()

    return arr(arr), codegen


@intrinsic
def _keep(typingctx: Any, arr: Any) -> Any:
    """No operation on `arr`, which numba then holds until this point: a kernel's own array
    whose borrowed copy its loop uses is kept alive by a `keep` after the loop (numba frees a
    local after its last use, and a borrow is not a use that counts)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return context.get_dummy_value()

    return types.none(arr), codegen


# called from kernels only (numba types them); Any for the Python type checker
borrow: Any = _borrow
keep: Any = _keep
