"""What a valid document or document query is: the pure checks, shared by engine and SDK.

Owns the caps (MAX_TOKENS_PER_DOC, MAX_TOKENS_PER_REQUEST, MAX_QUERY_TOKENS; see PARAMS.md)
and the checks of documents, weights and query matrices, each naming the first offender
("documents[3]", "documents[3][7][0]", "weights[2]", "query", "query[1][0]") with a stable
reason. No state: the remote SDK runs the same checks for values the wire cannot carry, so
both modes raise the same error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb import config
from vecdb.engine import validate as v
from vecdb.errors import InvalidArgument
from vecdb.types import Metric

F32 = npt.NDArray[np.float32]

MAX_TOKENS_PER_DOC = 4096  # tokens of one document (Qdrant's lesson: a hard, clear cap)
MAX_TOKENS_PER_REQUEST = 65_536  # tokens of one upsert_documents call, all documents
MAX_QUERY_TOKENS = 1024  # tokens of one search_documents query


def wrong_kind(call: str, name: str, kind: str) -> InvalidArgument:
    """The error of a document call on a collection that is not kind="multivector"."""
    return InvalidArgument(
        f"{call} needs a kind='multivector' collection; {name!r} is {kind!r}",
        field="collection",
        reason="WRONG_KIND",
    )


def dense_refused(name: str, call: str, instead: str) -> InvalidArgument:
    """The error of a dense vector call (`call`) on a document collection."""
    return InvalidArgument(
        f"{name!r} holds multi-vector documents: use {instead} instead of {call}",
        field="collection",
        reason="WRONG_KIND",
    )


def check_document_count(documents: int, ids: int) -> None:
    """An upsert_documents: one document per id."""
    if documents != ids:
        raise InvalidArgument(f"documents has {documents} entries but ids has {ids}",
                              field="documents", reason="COUNT_MISMATCH")  # fmt: skip


def check_matrix(doc: object, dim: int, field: str, cap: int) -> npt.NDArray[np.float64]:
    """One (n, dim) matrix of finite numbers, 1 <= n <= cap, as float64."""
    try:
        arr = np.asarray(doc)
    except (TypeError, ValueError):
        arr = np.asarray([None])
    if arr.dtype.kind not in "fiu":
        raise InvalidArgument(f"{field} must be a matrix of numbers", field=field,
                              reason="BAD_VECTORS")  # fmt: skip
    if arr.ndim != 2:
        raise InvalidArgument(
            f"{field} must be a matrix (n_tokens, {dim}), got shape {arr.shape}",
            field=field,
            reason="BAD_VECTORS",
        )
    if arr.shape[1] != dim:
        raise InvalidArgument(f"{field}: expected {dim} floats per token, got {arr.shape[1]}",
                              field=field, reason="WRONG_DIMENSION")  # fmt: skip
    if arr.shape[0] == 0:
        raise InvalidArgument(f"{field} has no tokens", field=field, reason="EMPTY")
    if arr.shape[0] > cap:
        raise InvalidArgument(f"{field} has {arr.shape[0]} tokens (max {cap})", field=field,
                              reason="TOO_MANY_TOKENS")  # fmt: skip
    wide = arr.astype(np.float64, copy=False)
    v.check_components(wide, field)
    return wide


def _listed(value: object, field: str, what: str = "(n_tokens, dim) matrices") -> list[Any]:
    if isinstance(value, np.ndarray) and value.ndim == 3:
        return list(value)
    if not isinstance(value, (list, tuple)):
        raise InvalidArgument(
            f"{field} must be an array of {what}", field=field,
            reason="BAD_VECTORS",
        )  # fmt: skip
    if not value:
        raise InvalidArgument(f"{field} is empty: send at least one", field=field, reason="EMPTY")
    return list(value)


def prepare_documents(
    documents: object, weights: object, dim: int, metric: Metric
) -> tuple[list[F32], list[F32 | None]]:
    """Checked documents (float32 as given) and weights (None where not given)."""
    docs = _listed(documents, "documents")
    out: list[F32] = []
    total = 0
    for i, doc in enumerate(docs):
        wide = check_matrix(doc, dim, f"documents[{i}]", MAX_TOKENS_PER_DOC)
        _check_nonzero(wide, f"documents[{i}]", metric)
        total += len(wide)
        if total > MAX_TOKENS_PER_REQUEST:
            raise InvalidArgument(
                f"documents hold more than {MAX_TOKENS_PER_REQUEST} tokens in one request; "
                "split it",
                field="documents",
                reason="TOO_MANY_TOKENS",
            )
        out.append(np.ascontiguousarray(wide, dtype=np.float32))
    ws: list[F32 | None] = [None] * len(out)
    if weights is not None:
        given = (
            _listed(weights, "weights", "per-token weight arrays (or null)")
            if not isinstance(weights, np.ndarray)
            else list(weights)
        )
        if len(given) != len(out):
            raise InvalidArgument(f"weights has {len(given)} entries but documents has {len(out)}",
                                  field="weights", reason="BAD_WEIGHTS")  # fmt: skip
        for i, (w, doc) in enumerate(zip(given, out, strict=True)):
            if w is None:
                continue
            arr = np.asarray(w, dtype=np.float64) if _numeric(w) else np.asarray([np.nan])
            if arr.shape != (len(doc),) or not np.isfinite(arr).all():
                raise InvalidArgument(
                    f"weights[{i}] must be {len(doc)} finite numbers, one per token",
                    field=f"weights[{i}]",
                    reason="BAD_WEIGHTS",
                )
            ws[i] = arr.astype(np.float32)
    return out, ws


def _check_nonzero(wide: npt.NDArray[np.float64], field: str, metric: Metric) -> None:
    """Under cosine, no token may be the zero vector (it has no direction)."""
    if metric is not Metric.COSINE:
        return
    zero = np.flatnonzero((wide * wide).sum(axis=1) == 0)
    if zero.size:
        raise InvalidArgument(f"{field}[{zero[0]}] is a zero vector, which has no cosine",
                              field=f"{field}[{zero[0]}]", reason="ZERO_VECTOR")  # fmt: skip


def _numeric(w: object) -> bool:
    try:
        return np.asarray(w).dtype.kind in "fiu"
    except (TypeError, ValueError):
        return False


def prepare_document_queries(query: object, dim: int, metric: Metric) -> list[F32]:
    """One query matrix or a list of them, checked and prepared (unit rows for cosine)."""
    single = (
        isinstance(query, np.ndarray)
        and query.ndim == 2
        or (isinstance(query, (list, tuple)) and bool(query) and _is_row_list(query))
    )
    items: list[Any] = [query] if single else _query_list(query)
    if len(items) > config.MAX_QUERIES:
        raise InvalidArgument(f"query has {len(items)} matrices (max {config.MAX_QUERIES})",
                              field="query", reason="TOO_MANY")  # fmt: skip
    out = []
    for i, q in enumerate(items):
        field = "query" if single else f"query[{i}]"
        wide = check_matrix(q, dim, field, MAX_QUERY_TOKENS)
        _check_nonzero(wide, field, metric)
        q32 = np.ascontiguousarray(wide, dtype=np.float32)
        out.append(v.normalize(q32) if metric is Metric.COSINE else q32)
    return out


def _is_row_list(q: Any) -> bool:
    """A list whose entries are rows of numbers (one matrix), not matrices."""
    first = q[0]
    if isinstance(first, np.ndarray):
        return first.ndim == 1
    return isinstance(first, (list, tuple)) and all(isinstance(x, (int, float)) for x in first)


def _query_list(query: object) -> list[Any]:
    if isinstance(query, np.ndarray) and query.ndim == 3:
        return list(query)
    if not isinstance(query, (list, tuple)) or not query:
        raise InvalidArgument(
            "query must be a matrix (m, dim) of query tokens, or a non-empty array of them",
            field="query",
            reason="BAD_VECTORS",
        )
    return list(query)
