"""The index kinds and states the SDK tests run on, and how a test drives each one.

Owns `IndexCase`: how a test creates a collection, settles it after writing and searches it,
for the flat index and for SPANN in both states (points in the exact write buffer; built by
`optimize()`). SPANN uses float32 postings and search params that read every posting
(`oracles.SPANN_EXACT`, `oracles.ALL_POSTINGS`), so its results must be exact too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oracles import ALL_POSTINGS, SPANN_EXACT

import vecdb


@dataclass(frozen=True)
class IndexCase:
    """How a test creates, settles and searches a collection of one index kind and state."""

    id: str  # the test id part
    index: str  # create_collection's index kind
    index_params: dict[str, Any] | None  # create_collection's index_params
    search_params: dict[str, Any] | None  # search's params (flat takes none)
    build: bool  # settle() calls optimize(): the index is built, the buffer drained

    def create(self, client: vecdb.Client, name: str, dim: int, metric: str = "l2",
               **kw: Any) -> Any:  # fmt: skip
        return client.create_collection(
            name, dim=dim, metric=metric, index=self.index, index_params=self.index_params, **kw
        )

    def settle(self, client: vecdb.Client, name: str) -> None:
        """After a test's writes: build the index (SPANN built), or leave the buffer as is."""
        if self.build:
            client.optimize(name)

    def search(self, client: vecdb.Client, name: str, queries: Any, k: int = 10,
               **kw: Any) -> Any:  # fmt: skip
        return client.search(name, queries, k, params=self.search_params, **kw)


INDEX_CASES = [
    IndexCase("flat", "flat", None, None, build=False),
    IndexCase("spann-buffer", "spann", SPANN_EXACT, ALL_POSTINGS, build=False),
    IndexCase("spann-built", "spann", SPANN_EXACT, ALL_POSTINGS, build=True),
]
