"""`Scope`: the set of live slots a read is restricted to, and how to search within it.

The tenant layer (`tenant_reads`) makes one for a tenant, several tenants, or a global read
while a dropped tenant's points wait for their cleanup; the read path (`reader`) intersects
filters with it and calls its `walk` for index searches. A value object: no storage, no lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.index.base import Visible

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
# (prepared queries, k, params, the visible subset, its sorted slots) -> top-k (slots, dist)
Walk = Callable[[F32, int, "dict[str, Any] | None", Visible, I64], tuple[I64, F32]]


@dataclass(frozen=True)
class Scope:
    """The live slots a read may see, and how to search a subset of them."""

    slots: I64  # sorted, unique
    visible: Visible  # the same set as a bitmap
    walk: Walk  # searches index + buffer within a subset of `slots`
    key: str  # names the set in cache keys (changes whenever the set does)

    def has(self, slots: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Membership of each slot (vectorised)."""
        s = np.asarray(slots, np.int64)
        if len(self.slots) == 0:
            return np.zeros(s.shape, np.bool_)
        i = np.minimum(np.searchsorted(self.slots, s), len(self.slots) - 1)
        return np.asarray(self.slots[i] == s, np.bool_)

    def mask(self, n: int) -> npt.NDArray[np.bool_]:
        """The set as a mask over slots 0 .. n - 1."""
        out = np.zeros(n, np.bool_)
        out[self.slots[self.slots < n]] = True
        return out
