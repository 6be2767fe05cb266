"""Multi-vector documents on the wire: token matrices packed with their token counts.

Owns the `Documents` message both ways (all tokens as little-endian float32 rows back to
back, the token count of each document, optional per-token weights) and the document
answers (`SearchDocumentsResponse` with its stats JSON, `GetDocumentsResponse`). Decoding
checks only that the bytes add up and that nothing sent would be dropped (weights without
`has_weights`), as `MALFORMED_REQUEST`; what the matrices hold is judged by the engine, so
remote and embedded calls fail alike. No engine imports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import InvalidArgument
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import Document, SearchResult

F32 = np.dtype("<f4")


def documents_to_proto(
    docs: Sequence[npt.NDArray[Any]], weights: Sequence[Any] | None = None
) -> pb.Documents:
    """Matrices (n_i, d_i) of numbers, and per-document weights (None entries allowed)."""
    widths = [int(d.shape[1]) for d in docs]
    same = len(set(widths)) <= 1
    msg = pb.Documents(
        dim=widths[0] if docs and same else 0,
        count=len(docs),
        data=b"".join(np.ascontiguousarray(d, dtype=F32).tobytes() for d in docs),
        token_counts=[int(d.shape[0]) for d in docs],
    )
    if not same:
        msg.widths.extend(widths)
    if weights is not None and any(w is not None for w in weights):
        parts, has = [], []
        for d, w in zip(docs, weights, strict=True):
            has.append(w is not None)
            parts.append(np.full(len(d), np.nan, F32) if w is None else np.asarray(w, F32))
        msg.weights = b"".join(p.tobytes() for p in parts)
        msg.has_weights.extend(has)
    return msg


def _malformed(field: str, what: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {what}", field=field, reason="MALFORMED_REQUEST")


def documents_from_proto(
    msg: pb.Documents, field: str = "documents"
) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32] | None] | None]:
    """The matrices and weights (None when the message carries none) of a `Documents`."""
    counts = list(msg.token_counts)
    widths = list(msg.widths) if msg.dim == 0 and msg.widths else [msg.dim] * len(counts)
    if len(counts) != msg.count or len(widths) != msg.count:
        raise _malformed(field, f"count={msg.count} but {len(counts)} token counts")
    floats = sum(c * w for c, w in zip(counts, widths, strict=True))
    if 4 * floats != len(msg.data):
        raise _malformed(field, f"data has {len(msg.data)} bytes, token counts need {4 * floats}")
    flat = np.frombuffer(msg.data, F32)
    docs, pos = [], 0
    for c, w in zip(counts, widths, strict=True):
        docs.append(flat[pos : pos + c * w].astype(np.float32).reshape(c, w))
        pos += c * w
    if not msg.has_weights:
        if msg.weights:  # weights no document claims: dropping them would store a document
            raise InvalidArgument(  # without the weights its sender gave it
                f"{field}.weights has {len(msg.weights)} bytes but {field}.has_weights is "
                "empty: give one has_weights entry per document, true for those weighted",
                field=f"{field}.has_weights", reason="MALFORMED_REQUEST",
            )  # fmt: skip
        return docs, None
    if len(msg.has_weights) != msg.count or len(msg.weights) != 4 * sum(counts):
        raise _malformed(field, "weights do not match the token counts")
    wflat = np.frombuffer(msg.weights, F32)
    weights: list[npt.NDArray[np.float32] | None] = []
    pos = 0
    for c, has in zip(counts, msg.has_weights, strict=True):
        weights.append(wflat[pos : pos + c].astype(np.float32) if has else None)
        pos += c
    return docs, weights


def search_documents_to_proto(res: SearchResult) -> pb.SearchDocumentsResponse:
    return pb.SearchDocumentsResponse(
        result=convert.result_to_proto(res), stats=json.dumps(res.stats or {})
    )


def search_documents_from_proto(msg: pb.SearchDocumentsResponse) -> SearchResult:
    base = convert.result_from_proto(msg.result)
    stats = {k: float(v) for k, v in json.loads(msg.stats or "{}").items()}
    return SearchResult(ids=base.ids, distances=base.distances, payloads=base.payloads,
                        stats=stats, missing_shards=list(msg.missing_shards))  # fmt: skip


def get_documents_to_proto(
    found: Sequence[Document], with_tokens: bool, with_payload: bool
) -> pb.GetDocumentsResponse:
    msg = pb.GetDocumentsResponse(ids=convert.ids_to_proto([d.id for d in found]),
                                  with_payload=with_payload)  # fmt: skip
    if with_tokens:
        tokens = [d.tokens for d in found if d.tokens is not None]
        msg.documents.CopyFrom(documents_to_proto(tokens, [d.weights for d in found]))
    if with_payload:
        msg.payloads.extend(
            "" if d.payload is None else convert.dumps_json(d.payload) for d in found
        )
    return msg


def get_documents_from_proto(msg: pb.GetDocumentsResponse) -> list[Document]:
    ids = convert.ids_from_proto(msg.ids)
    docs: list[Any] = [None] * len(ids)
    weights: list[Any] = [None] * len(ids)
    if msg.documents.count:
        got, w = documents_from_proto(msg.documents)
        docs = list(got)
        weights = list(w) if w is not None else weights
    pays: list[Any] = [None] * len(ids)
    if msg.with_payload:
        pays = convert.payloads_from_proto(msg.payloads, None) or pays
    return [
        Document(id=i, tokens=t, payload=p, weights=w)
        for i, t, p, w in zip(ids, docs, pays, weights, strict=True)
    ]
