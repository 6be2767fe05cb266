"""Search restricted to tenants: the seam between tenant membership and the index.

The engine's tenant layer (`engine/tenants.py`) knows which slots each tenant may see and
calls `search_tenants` with them; this module decides how to search that set (an exact scan
for a small set, the index's tenant-aware walk, or the global walk with the `visible` set)
and `changed` is told whenever a tenant's set changes, so derived structures can follow.

First version: every tenant search is the global search restricted to `visible`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine.core import CollectionCore
from vecdb.engine.reader import search_slots
from vecdb.index.base import Visible

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


def search_tenants(
    coll: CollectionCore,
    q: F32,
    k: int,
    params: dict[str, Any] | None,
    tenant_nos: list[int],
    slots: I64,
    visible: Visible,
) -> tuple[I64, F32]:
    """Top-k slots of prepared queries among `slots` (sorted, the live slots granted to any
    of `tenant_nos`; `visible` is the same set as a bitmap), over index and write buffer."""
    return search_slots(coll, q, k, params, visible)


def changed(coll: CollectionCore, tenant_nos: list[int]) -> None:
    """Tenants whose set of visible slots changed (grants, revokes, upserts, deletes, a drop).
    Called after the change is committed, under the collection's write lock."""
