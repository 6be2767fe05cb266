"""The engine: a data directory, its collections, their write and read paths."""

from vecdb.engine.database import Database

__all__ = ["Database"]
