"""The engine: a data directory, its collections, their write and read paths.

`Database` is imported on first use, so that `vecdb.engine.validate` (the one rule book, which
the remote SDK also consults) loads without numba kernels or RocksDB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vecdb.engine.database import Database


def __getattr__(name: str) -> Any:
    if name == "Database":
        from vecdb.engine.database import Database

        return Database
    raise AttributeError(f"module 'vecdb.engine' has no attribute {name!r}")


__all__ = ["Database"]
