"""The runtime API-key file: the keys an admin created over the wire, hashed, kept across
restarts.

One small JSON document, `{"format": "vecdb-api-keys", "version": 1, "keys": [...]}`, each
key a record of its public id, the hex SHA-256 of the secret (never the secret), role, tenant
and collection sets, description and creation time. Written whole and published by rename
(tmp, fsync, `os.replace`, fsync of the directory), so a crash leaves the old or the new file,
never a torn one; the file is created with mode 0600. An unknown format or version, or a file
that does not parse, is `DataLoss` naming the file: the server refuses to start rather than
forget keys that were revoked. Owns the file only; `vecdb.server.auth` owns what keys mean.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vecdb.errors import DataLoss

FORMAT = "vecdb-api-keys"  # the magic of the file
VERSION = 1  # its format version
FILE_NAME = "api_keys.json"  # default name, in the server's data directory

_FIELDS: dict[str, type | tuple[type, ...]] = {"id": str, "sha256": str, "role": str, "tenants": list, "collections": list,
           "description": str, "created": (int, float)}  # fmt: skip


class KeyFile:
    """Load and save the runtime key records at `path`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        """The records in the file (none if it does not exist yet)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DataLoss(f"API key file {str(self.path)!r}: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise DataLoss(f"API key file {str(self.path)!r} does not parse: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DataLoss(f"API key file {str(self.path)!r} is not a {FORMAT} file")
        if doc.get("version") != VERSION:
            raise DataLoss(f"API key file {str(self.path)!r} has format version "
                           f"{doc.get('version')!r}; this server reads version {VERSION}")  # fmt: skip
        records = doc.get("keys")
        if not isinstance(records, list) or not all(_valid(r) for r in records):
            raise DataLoss(f"API key file {str(self.path)!r} holds a malformed key record")
        return records

    def save(self, records: list[dict[str, Any]]) -> None:
        """Replace the file's records, atomically and durably."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"format": FORMAT, "version": VERSION, "keys": records}, indent=1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(body.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _valid(record: object) -> bool:
    if not isinstance(record, dict):
        return False
    for name, kind in _FIELDS.items():
        if not isinstance(record.get(name), kind):
            return False
    if not all(isinstance(n, str) for n in (*record["tenants"], *record["collections"])):
        return False
    try:
        return len(bytes.fromhex(record["sha256"])) == 32 and record["role"] in (
            "read", "write", "admin")  # fmt: skip
    except ValueError:
        return False
