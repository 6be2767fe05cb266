"""Result slots to user ids (int ids) in one compiled pass.

Owns `int_ids`: the id table lookup of a search's result slots (padding and slots without an
id, i.e. deleted meanwhile or not in the table, become -1) and the count of slots that were
results but have no id (`engine.reader` drops those hits). A search's k results cost a few
numpy passes otherwise (mask, fill, gather, compare, count: most of it per-call overhead).
Pure function, no I/O; imports nothing from vecdb.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


@nb.njit(cache=True, nogil=True)
def _int_ids(slots, table, out):  # type: ignore[no-untyped-def]
    n = table.shape[0]
    missing = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        v = -1
        if s >= 0:
            if s < n:
                v = table[s]
            if v == -1:
                missing += 1
        out[i] = v
    return missing


def int_ids(slots: I64, table: npt.NDArray[np.int32] | I64) -> tuple[I64, int]:
    """(ids of `slots` from `table` (slot -> id, int32 or int64, -1 for none), same shape,
    int64; -1 where the
    slot is negative, beyond the table or has no id) and how many non-negative slots had
    no id."""
    flat = np.ascontiguousarray(slots, np.int64).reshape(-1)
    out = np.empty(flat.shape[0], np.int64)
    missing = _int_ids(flat, table, out)
    return out.reshape(np.shape(slots)), int(missing)
