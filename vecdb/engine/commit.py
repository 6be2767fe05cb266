"""The commit point and the op log.

Owns the database-wide sequence (one number per committed request), the commit of a request's
RocksDB WriteBatch (synced before it returns: the acknowledgement point), and the encoding of
op-log entries. The op log holds, per collection, the writes that a disk index has not yet
made durable; the engine replays entries past the index's last checkpoint on open and
truncates the log up to a checkpointed sequence.

Every entry carries a format version `v`, so later kinds of operation (tenant grants,
multi-vector documents) can be added without ambiguity and old logs still replay:
- v0 (no `v` field; written before versions existed): {"add": [start, n], "rm": [slots]}
- v1: {"v": 1, "op": "write", "add": [start, n], "rm": [slots]} — slots start..start+n-1 were
  added (their vectors are in the `vectors` column family unless deleted later) and the
  slots in `rm` were removed.
- v2: as v1, plus the kind {"v": 2, "op": "payload", "slots": [slots]} — the payloads of
  these live slots were replaced (set_payload / overwrite_payload); vectors and slots are
  unchanged, so an index replaying it has nothing to do. Deletes by filter are "write"
  entries like deletes by id, one per batch of at most `writer.DELETE_BATCH` points.
- v3: as v2, plus the kind {"v": 3, "op": "acl", "slots": [slots], "tenants": [numbers]} —
  the access lists of these live slots changed for these tenants (grant, revoke, a drop's
  cleanup); vectors and slots are unchanged, so an index replaying it has nothing to do,
  while derived tenant structures may follow it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgpack

from vecdb.errors import FormatError
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV, Batch

OPLOG_VERSION = 3  # version written by this build
READ_VERSIONS = (0, 1, 2, 3)  # versions this build replays
OP_WRITE = "write"  # adds and removes of dense points
OP_PAYLOAD = "payload"  # payload changes of live points (v2)
OP_ACL = "acl"  # access-list changes of live points (v3)
KNOWN_OPS = (OP_WRITE, OP_PAYLOAD, OP_ACL)


@dataclass(frozen=True)
class Op:
    """One decoded op-log entry."""

    seq: int  # sequence number of the request that wrote it
    kind: str  # one of KNOWN_OPS
    add_start: int = 0  # first added slot
    add_count: int = 0  # number of consecutive slots added
    removed: list[int] = field(default_factory=list)  # slots removed
    payload_slots: list[int] = field(default_factory=list)  # slots whose payload changed
    acl_tenants: list[int] = field(default_factory=list)  # tenants whose access changed (v3)


def encode_write(add_start: int, add_count: int, removed: list[int]) -> bytes:
    """The op-log entry of an upsert or delete."""
    body = {"v": OPLOG_VERSION, "op": OP_WRITE, "add": [add_start, add_count], "rm": removed}
    return bytes(msgpack.packb(body))


def encode_payload(slots: list[int]) -> bytes:
    """The op-log entry of a set_payload / overwrite_payload."""
    return bytes(msgpack.packb({"v": OPLOG_VERSION, "op": OP_PAYLOAD, "slots": slots}))


def encode_acl(slots: list[int], tenants: list[int]) -> bytes:
    """The op-log entry of a grant or revoke (v3)."""
    body = {"v": OPLOG_VERSION, "op": OP_ACL, "slots": slots, "tenants": tenants}
    return bytes(msgpack.packb(body))


def decode(seq: int, raw: bytes) -> Op:
    """Decode an entry of any supported version; `FormatError` for newer or unknown ones."""
    try:
        body = msgpack.unpackb(raw)
    except Exception as exc:  # msgpack raises several unrelated classes
        raise FormatError(f"op log entry {seq} is not valid msgpack: {exc}") from exc
    if not isinstance(body, dict):
        raise FormatError(f"op log entry {seq} is not a map")
    version = body.get("v", 0)
    if version not in READ_VERSIONS:
        raise FormatError(
            f"op log entry {seq} has format version {version}; this build reads "
            f"{', '.join(map(str, READ_VERSIONS))} (a newer vecdb wrote it)"
        )
    kind = body.get("op", OP_WRITE)
    if (kind not in KNOWN_OPS or (kind == OP_PAYLOAD and version < 2)
            or (kind == OP_ACL and version < 3)):  # fmt: skip
        raise FormatError(f"op log entry {seq} has unknown op {kind!r}")
    if kind == OP_ACL:
        return Op(seq, kind, payload_slots=[int(s) for s in body["slots"]],
                  acl_tenants=[int(t) for t in body["tenants"]])  # fmt: skip
    if kind == OP_PAYLOAD:
        return Op(seq, kind, payload_slots=[int(s) for s in body["slots"]])
    start, count = body["add"]
    return Op(seq, kind, int(start), int(count), [int(s) for s in body["rm"]])


class Sequencer:
    """The database-wide operation sequence and the lock that orders commits."""

    def __init__(self, kv: KV, start: int) -> None:
        self.kv = kv  # the database's store
        self.value = start  # last committed sequence number
        self.lock = threading.Lock()  # orders commits

    def commit(
        self, batch: Batch, log_prefix: bytes | None = None, op: bytes | None = None, after: int = 0
    ) -> int:
        """Assign the next sequence number, record it (and the op-log entry `op` under
        `log_prefix` + seq, if given) in the batch and commit durably (`KV.commit`, `after`
        the bytes the caller then writes to the disk); return the number."""
        with self.lock:
            seq = self.value + 1
            batch.put(kvmod.CF_META, b"seq", kvmod.u64(seq))
            if log_prefix is not None and op is not None:
                batch.put(kvmod.CF_OPLOG, log_prefix + kvmod.u64(seq), op)
            self.kv.commit(batch, after)
            self.value = seq
            return seq


def read_log(kv: KV, prefix: bytes, after: int) -> Iterator[Op]:
    """The entries of one collection's log with a sequence above `after`, in order, decoded
    one at a time (a replay of ~1,000 grant entries held all their slots as Python ints at
    once and left the heap fragmented: +2.9 MiB in a fresh process)."""
    end = kvmod.prefix_end(prefix)
    for key, value in kv.scan_range(kvmod.CF_OPLOG, prefix + kvmod.u64(after + 1), end):
        yield decode(kvmod.read_u64(key, len(prefix)), value)


def truncate_log(kv: KV, prefix: bytes, upto: int) -> None:
    """Delete one collection's entries with a sequence at or below `upto` (they are durable
    in its index now); later entries stay."""
    batch = kv.batch()
    batch.delete_range(kvmod.CF_OPLOG, prefix + kvmod.u64(0), prefix + kvmod.u64(upto + 1))
    kv.commit(batch)
