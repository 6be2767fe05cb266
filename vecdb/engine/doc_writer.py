"""The write path of multivector collections: document validation, storage and upsert.

Owns what a document is on the way in and at rest. `prepare_documents` checks a request's
documents whole (each an (n_i, dim) matrix of finite numbers, 1 <= n_i <= MAX_TOKENS_PER_DOC,
at most MAX_TOKENS_PER_REQUEST tokens in all, optional per-token weights), naming the first
offender ("documents[3]", "documents[3][7][0]", "weights[2]"); nothing is written on a
rejected request. At rest a document is the point table's vector row of its slot, holding
`encode_document`: a header (u32 token count, u32 flags) then the tokens as upserted
(float32, row-major) then, with flag 1, the weights (float32). The RocksDB batch (ids,
payloads, payload-index entries, op-log entry) is the one a dense upsert writes; after the
commit the prepared tokens (unit rows for cosine) go straight into the document index.
"""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import commit, tenant_access
from vecdb.engine import validate as v
from vecdb.engine.core import CollectionCore
from vecdb.engine.doc_rules import (
    check_document_count,
    dense_refused,
    prepare_documents,
    wrong_kind,
)
from vecdb.engine.json_rules import prepare_payloads
from vecdb.engine.writer import Notify
from vecdb.types import CollectionKind, Metric

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

HEADER = struct.Struct("<II")  # token count, flags
FLAG_WEIGHTS = 1


def check_kind(coll: CollectionCore, call: str) -> None:
    """Document calls need a multivector collection."""
    if coll.cfg.kind != CollectionKind.MULTIVECTOR.value:
        raise wrong_kind(call, coll.cfg.name, coll.cfg.kind)


def refuse_dense(coll: CollectionCore, call: str, instead: str) -> None:
    """Dense vector calls on a document collection are refused before anything happens."""
    if coll.cfg.kind == CollectionKind.MULTIVECTOR.value:
        raise dense_refused(coll.cfg.name, call, instead)


def encode_document(tokens: F32, weights: F32 | None) -> bytes:
    """The stored row of a document."""
    head = HEADER.pack(len(tokens), FLAG_WEIGHTS if weights is not None else 0)
    tail = b"" if weights is None else weights.astype("<f4").tobytes()
    return head + tokens.astype("<f4").tobytes() + tail


def decode_document(raw: bytes, dim: int) -> tuple[F32, F32 | None]:
    """Tokens (n, dim) and weights (or None) of a stored row."""
    n, flags = HEADER.unpack_from(raw, 0)
    tokens = np.frombuffer(raw, "<f4", n * dim, HEADER.size).reshape(n, dim).astype(np.float32)
    weights = None
    if flags & FLAG_WEIGHTS:
        weights = np.frombuffer(raw, "<f4", n, HEADER.size + 4 * n * dim).astype(np.float32)
    return tokens, weights


def index_input(
    coll: CollectionCore, docs: list[F32], weights: list[F32 | None]
) -> tuple[F32, I64, F32 | None]:
    """Prepared tokens (unit rows for cosine), offsets and weights (NaN where not given) of
    documents, as the index takes them."""
    tokens = np.concatenate(docs) if docs else np.zeros((0, coll.cfg.dim), np.float32)
    if coll.metric is Metric.COSINE:
        tokens = v.normalize(tokens)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    if all(w is None for w in weights):
        return tokens, offsets, None
    w = np.concatenate(
        [
            np.full(len(d), np.nan, np.float32) if x is None else x
            for d, x in zip(docs, weights, strict=True)
        ]
    )
    return tokens, offsets, w


def upsert_documents(
    coll: CollectionCore,
    ids: object,
    documents: object,
    weights: object,
    payloads: object,
    notify: Notify,
    tenant: object = None,
    grant_to: object = None,
) -> int:
    """Insert or replace documents; in a multi-tenant collection `tenant` owns them and
    `grant_to` names more tenants that may see them (the rules of a dense upsert,
    `tenant_access`: another tenant's document is refused, quotas count documents)."""
    check_kind(coll, "upsert_documents")
    access = tenant_access.upsert_access(coll, tenant, grant_to)
    id_list = v.prepare_ids(ids, coll.id_type)
    docs, ws = prepare_documents(documents, weights, coll.cfg.dim, coll.metric)
    check_document_count(len(docs), len(id_list))
    blobs = prepare_payloads(payloads, len(id_list))
    keys = [v.encode_id(i) for i in id_list]
    tokens, offsets, flat_w = index_input(coll, docs, ws)
    rows = [encode_document(d, w) for d, w in zip(docs, ws, strict=True)]
    index: Any = coll.index
    with coll.write_lock:
        pts, pidx = coll.points, coll.pindex
        looked = pts.lookup(keys)
        old = [s for s in looked if s is not None]
        if access is not None:
            access.check(id_list, looked)  # another tenant's document: refused, nothing written
        pts.check_room(len(keys), coll.name)
        start = pts.next_slot
        batch = coll.kv.batch()
        olds = pts.payloads(old) if (old and pidx.defs) else [None] * len(old)
        for slot, pay in zip(old, olds, strict=True):
            pts.delete_slot(batch, slot)
            pidx.remove(batch, slot, pay)
        for j, (key, blob) in enumerate(zip(keys, blobs, strict=True)):
            pts.put(batch, key, start + j, rows[j], blob)
            if blob is not None and pidx.defs:
                pidx.add(batch, start + j, json.loads(blob))
            if access is not None:
                access.put(batch, start + j, looked[j], j)
        if access is not None:
            access.drop_old(batch)
        pts.put_next_slot(batch, start + len(keys))
        rows_after = tokens.nbytes if coll.kind.persistent else 0  # the index's row file
        op = commit.encode_write(start, len(keys), old)
        coll.seq.commit(batch, coll.prefix, op, after=rows_after)
        # Acknowledged from here on: apply to the index (its raw rows go to disk: room for
        # them was checked with the commit).
        new_slots = np.arange(start, start + len(keys), dtype=np.int64)
        if old:
            index.remove(np.asarray(old, np.int64))
        index.add_documents(new_slots, tokens, offsets, flat_w)
        pts.apply_upsert(new_slots, id_list, old)
        if access is not None:
            access.state.notify(access.apply())
        coll.selector.bump()
        coll.status.last_write = time.monotonic()
    notify(coll)
    return len(keys)
