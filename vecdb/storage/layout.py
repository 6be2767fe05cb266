"""What vecdb keeps in RocksDB, and where: the column families, the per-collection meta key
heads, and the walk over every row of one collection (snapshot, restore, drop). Owns the
layout only; `kv` opens the store and re-exports these names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from vecdb.storage.view import Reader


class PrefixDeleter(Protocol):
    """A write batch, as far as `delete_collection_rows` needs one."""

    def delete_prefix(self, cf: str, prefix: bytes) -> None: ...


# Column families and what they hold (keys start with a 4-byte collection id unless noted):
CF_META = "meta"  # collection configs by name, counters (no cid prefix for db-level keys)
CF_OPLOG = "oplog"  # cid + seq -> msgpack op (for indexes that replay)
CF_IDS = "ids"  # cid + encoded user id -> slot (8 bytes big-endian)
CF_SLOTS = "slots"  # cid + slot -> encoded user id
CF_VECTORS = "vectors"  # cid + slot -> little-endian float32 vector
CF_PAYLOAD = "payload"  # cid + slot -> JSON payload
COLUMN_FAMILIES = (CF_META, CF_OPLOG, CF_IDS, CF_SLOTS, CF_VECTORS, CF_PAYLOAD)

# What a collection owns in the meta column family: every such key is one of these heads, then
# the collection's 4-byte id, then anything. Snapshot, restore and drop find a collection's
# meta rows by these heads alone (`collection_rows`, `delete_collection_rows`), so a new kind
# of per-collection meta key must be added here.
META_NEXT_SLOT = b"next_slot:"  # + cid -> u64: the point table's slot counter
META_PIDX_DEF = b"pidxdef:"  # + cid + field -> JSON: a payload index definition
META_PIDX_ENTRY = b"pidx:"  # + cid + field + value + slot -> b"": a payload index entry
META_REBUILD = b"rebuild:"  # + cid -> why an open rebuilds the index from stored vectors:
REBUILD_REPLACING = b""  # its files were being replaced (a rebuild, a quarantine) when it stopped
REBUILD_UNBUILT = b"unbuilt"  # no build was checkpointed yet (the op log may be truncated)
# Tenants of a multi-tenant collection (vecdb.engine.tenants):
META_TENANT = b"tenant:"  # + cid + name -> msgpack: the tenant's number, state, drop progress
META_TENANT_NEXT = b"tnext:"  # + cid -> u64: the next tenant number to hand out
META_ACL = b"acl:"  # + cid + slot (u64) -> owner number (u32) + sorted grantee numbers (u32 each)
META_TV = b"tv:"  # + cid + tenant number (u32) + slot (u64) -> b"o" (owner) | b"g" (grantee)
COLLECTION_META_HEADS = (
    META_NEXT_SLOT,
    META_PIDX_DEF,
    META_PIDX_ENTRY,
    META_REBUILD,
    META_TENANT,
    META_TENANT_NEXT,
    META_ACL,
    META_TV,
)


def collection_rows(src: Reader, prefix: bytes) -> Iterator[tuple[str, bytes, bytes, bytes]]:
    """Every row of the collection with key prefix `prefix` as (column family, head, tail,
    value), its key being head + prefix + tail: the rows of the cid-prefixed families (head
    b"") and its meta rows (`COLLECTION_META_HEADS`)."""
    for cf in COLUMN_FAMILIES:
        if cf == CF_META:
            for head in COLLECTION_META_HEADS:
                for key, value in src.scan_prefix(cf, head + prefix):
                    yield cf, head, key[len(head) + len(prefix) :], value
            continue
        for key, value in src.scan_prefix(cf, prefix):
            yield cf, b"", key[len(prefix) :], value


def delete_collection_rows(batch: PrefixDeleter, prefix: bytes) -> None:
    """Delete every row `collection_rows` would yield for `prefix` (drop, restore)."""
    for cf in COLUMN_FAMILIES:
        if cf == CF_META:
            for head in COLLECTION_META_HEADS:
                batch.delete_prefix(cf, head + prefix)
        else:
            batch.delete_prefix(cf, prefix)
