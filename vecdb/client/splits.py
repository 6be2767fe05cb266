"""Fitting a remote call into the gRPC messages a server takes and sends.

A server refuses a request above its `limits.max_message_bytes` (64 MiB by default) and
measures each answer before it sends it, refusing one above the limit with reason
ANSWER_TOO_LARGE (`vecdb.server.answer_size`). So that a call which works embedded works
remotely too:

- Requests. An upsert, a document upsert or a search larger than half the client's
  `max_message_bytes` (the server's default unless the client is given the server's own) is
  sent as several requests of rows, documents or queries, each within that half. Only a
  request the engine would take as a whole is split (no more rows, tokens or queries than
  its caps, no repeated id), so splitting never accepts what one request would refuse;
  anything else goes as it is, judged (or refused as too large) as one. A split write is
  not atomic as a whole.
- A server with a lower limit than the client was given refuses a request as too large
  before reading it (grpcio names its limit): the client then keeps that limit
  (`Budget`), sends the refused request again in parts within half of it, and splits later
  calls at it at once. Only a request that cannot be split gets the server's error.
- Answers. A get or get_documents whose answer the server refuses as too large is asked
  again as two halves of its ids, a search (dense or documents) as two halves of its
  queries, each half halved again if need be; a scroll is asked again with half its
  `limit` (a shorter page, with its next offset: a page holds up to `limit` points). Only a
  single id, query or point whose answer alone is too large gets the server's error.

`fitted` / `afitted` drive the parts of one call (sync / async); `merge_results` joins the
parts of a search. Imports the wire, the engine's request caps and `vecdb.types`; no grpc.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from vecdb import config
from vecdb.client.plain_requests import AnySearch, PackedSearch
from vecdb.engine.doc_rules import MAX_TOKENS_PER_REQUEST
from vecdb.engine.validate import DEFAULT_SCROLL_LIMIT
from vecdb.errors import Internal, VecdbError
from vecdb.rpc.status import ANSWER_TOO_LARGE, REQUEST_TOO_LARGE, server_limit
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import SearchResult

R = TypeVar("R")  # a request
A = TypeVar("A")  # its answer
ID_BYTES = 16  # wire bytes of an id and its framing, about (a str id counts its own length)
# search_documents stats that are means over the queries, not sums (multivector search_batch)
AVERAGED_DOC_STATS = ("maxsim_work_saved", "exact", "nprobe")


# ------------------------------------------------------------------------ the parts of a call


class Budget:
    """The message size a client fits its requests to: the `max_message_bytes` it was given,
    lowered to a server's own limit the first time that server refuses a request as larger
    than it, so the refused call goes again in parts and later calls are split at once."""

    __slots__ = ("max_bytes",)

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def again(self, err: VecdbError, part: R, split: Callable[[R, int], list[R]]) -> list[R]:
        """`part` split within half the server's limit when `err` refused it as a request
        over that limit (kept for later calls); [] for any other error, or a part that does
        not split."""
        if self.learn(err) is None:
            return []
        parts = split(part, self.max_bytes)
        return parts if len(parts) > 1 else []

    def learn(self, err: VecdbError) -> int | None:
        """The server's limit when `err` refused a request as over it (kept); else None."""
        limit = server_limit(err) if err.reason == REQUEST_TOO_LARGE else None
        if limit is not None:
            self.max_bytes = min(self.max_bytes, limit)
        return limit


Split = Callable[[R, int], list[R]]
Halve = Callable[[R], list[R] | None]
Rows = Callable[[R], int]


def fitted(
    send: Callable[[R], A], parts: Sequence[R], halve: Halve[R] | None = None,
    fit: tuple[Budget, Split[R]] | None = None, rows: Rows[R] | None = None,
) -> list[A]:  # fmt: skip
    """The answers to `parts`, in order, each sent with `send`; a part the server refuses as
    too large is replaced by its parts (`retry_parts`). With `rows` (the rows of a part), a
    part's error names its row in the whole ("vectors[R]"), not in the part."""
    todo = deque(_firsts(parts, rows))
    out: list[A] = []
    while todo:
        first, part = todo.popleft()
        try:
            out.append(send(part))
        except VecdbError as err:
            again = _retried(err, part, first, halve, fit)
            todo.extendleft(reversed(_firsts(again, rows, first)))
    return out


async def afitted(
    send: Callable[[R], Awaitable[A]], parts: Sequence[R], halve: Halve[R] | None = None,
    fit: tuple[Budget, Split[R]] | None = None, rows: Rows[R] | None = None,
) -> list[A]:  # fmt: skip
    """`fitted` for the async client."""
    todo = deque(_firsts(parts, rows))
    out: list[A] = []
    while todo:
        first, part = todo.popleft()
        try:
            out.append(await send(part))
        except VecdbError as err:
            again = _retried(err, part, first, halve, fit)
            todo.extendleft(reversed(_firsts(again, rows, first)))
    return out


def sent(
    send: Callable[[R], A], whole: R, split: Split[R], budget: Budget,
    halve: Halve[R] | None = None,
) -> list[A]:  # fmt: skip
    """The answers to `whole` sent in the parts `split` makes at the client's budget, each
    part the server refuses as too large sent again in parts (`fitted`); an error about a
    row of a part names its row in `whole`."""
    return fitted(send, split(whole, budget.max_bytes), halve, (budget, split), _ROWS.get(split))


async def asent(
    send: Callable[[R], Awaitable[A]], whole: R, split: Split[R], budget: Budget,
    halve: Halve[R] | None = None,
) -> list[A]:  # fmt: skip
    """`sent` for the async client."""
    parts = split(whole, budget.max_bytes)
    return await afitted(send, parts, halve, (budget, split), _ROWS.get(split))


def _firsts(parts: Sequence[R], rows: Rows[R] | None, first: int = 0) -> list[tuple[int, R]]:
    """`parts` with the row of the whole each starts at (the first at `first`; 0 for all
    without `rows`)."""
    out = []
    for part in parts:
        out.append((first, part))
        first += rows(part) if rows is not None else 0
    return out


def _retried(
    err: VecdbError, part: R, first: int, halve: Halve[R] | None,
    fit: tuple[Budget, Split[R]] | None,
) -> list[R]:  # fmt: skip
    """`retry_parts`, its error naming the row in the whole (the part starts at `first`)."""
    try:
        return retry_parts(err, part, halve, fit)
    except VecdbError as final:
        if first:
            final.message = shift_row(final.message, first)
            final.args = (final.message,)
            final.field = None if final.field is None else shift_row(final.field, first)
        raise


def retry_parts(
    err: VecdbError, part: R, halve: Halve[R] | None, fit: tuple[Budget, Split[R]] | None
) -> list[R]:
    """What to send instead of `part` after `err`: `halve(part)` when its answer was refused
    as too large, `part` split at the server's limit (`fit`: the client's budget and the
    call's split) when the request was; else (or if it cannot be split) `err` is raised."""
    if err.reason == ANSWER_TOO_LARGE:
        out = halve(part) if halve is not None else None
    else:
        out = fit[0].again(err, part, fit[1]) if fit is not None else None
    if not out:
        raise err
    return out


def _groups(sizes: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) groups of items whose sizes add up to at most `budget` (an item
    larger than that alone)."""
    out: list[tuple[int, int]] = []
    lo, total = 0, 0
    for i, size in enumerate(sizes):
        if i > lo and total + size > budget:
            out.append((lo, i))
            lo, total = i, 0
        total += size
    out.append((lo, len(sizes)))
    return out


def _id_values(ids: pb.Ids) -> list[Any] | None:
    kind = ids.WhichOneof("kind")
    if kind == "ints":
        return list(ids.ints.values)
    if kind == "strs":
        return list(ids.strs.values)
    return None  # mixed or none: the engine names the fault


def _ids_like(ids: pb.Ids, values: Sequence[Any]) -> pb.Ids:
    out = pb.Ids()
    if ids.WhichOneof("kind") == "strs":
        out.strs.values.extend(values)
    else:
        out.ints.values.extend(values)
    return out


def _one_request(ids: list[Any] | None, n: int) -> bool:
    """Whether `n` items under these ids pass the engine's request-wide checks of ids (one
    id each, at most MAX_BATCH, none repeated), so that they may be split."""
    return ids is not None and len(ids) == n and 1 < n <= config.MAX_BATCH and len(set(ids)) == n


# ------------------------------------------------------------------------ writes


def split_upsert(whole: pb.UpsertRequest, max_bytes: int) -> list[pb.UpsertRequest]:
    """One request, or several if it would not fit in half a message (splits are not
    atomic)."""
    vec, pay = whole.vectors, whole.payloads
    n = vec.count
    size = whole.ByteSize()
    if size <= max_bytes // 2 or vec.row_lengths or len(pay) not in (0, n):
        return [whole]  # the engine answers shape mismatches with its own message
    ids = _id_values(whole.ids)
    if ids is None or not _one_request(ids, n):
        return [whole]
    rows = max(1, int(n * (max_bytes // 2) / size))
    row_bytes = vec.dim * 4
    out = []
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        data = vec.data[lo * row_bytes : hi * row_bytes]
        out.append(pb.UpsertRequest(
            collection=whole.collection, ids=_ids_like(whole.ids, ids[lo:hi]),
            payloads=pay[lo:hi], vectors=pb.Vectors(dim=vec.dim, count=hi - lo, data=data),
            tenant=whole.tenant, grant_to=whole.grant_to,
        ))  # fmt: skip
    return out


def split_documents(
    whole: pb.UpsertDocumentsRequest, max_bytes: int
) -> list[pb.UpsertDocumentsRequest]:
    """An upsert_documents request, or several of whole documents, each within half a
    message, if it is larger (splits are not atomic)."""
    docs, pays = whole.documents, whole.payloads
    n, dim, counts = docs.count, docs.dim, list(docs.token_counts)
    weighted = len(docs.has_weights) > 0
    if dim == 0 or len(counts) != n or len(pays) not in (0, n) or (
            weighted and len(docs.has_weights) != n):  # fmt: skip
        return [whole]  # malformed: the server names the fault
    row = 4 * dim + (4 if weighted else 0)
    sizes = [c * row + ID_BYTES for c in counts]
    if pays:
        sizes = [s + len(p.encode()) for s, p in zip(sizes, pays, strict=True)]
    budget = max_bytes // 2
    tokens = sum(counts)
    if sum(sizes) <= budget or tokens > MAX_TOKENS_PER_REQUEST:
        return [whole]
    ids = _id_values(whole.ids)
    data, weights = docs.data, docs.weights
    if (ids is None or not _one_request(ids, n) or len(data) != 4 * dim * tokens
            or (weighted and len(weights) != 4 * tokens)):  # fmt: skip
        return [whole]
    out = []
    t0 = 0  # first token of the part
    for lo, hi in _groups(sizes, budget):
        t1 = t0 + sum(counts[lo:hi])
        part = pb.Documents(dim=dim, count=hi - lo, data=data[4 * dim * t0 : 4 * dim * t1],
                            token_counts=counts[lo:hi])  # fmt: skip
        if weighted:
            part.weights = weights[4 * t0 : 4 * t1]
            part.has_weights.extend(docs.has_weights[lo:hi])
        out.append(pb.UpsertDocumentsRequest(
            collection=whole.collection, ids=_ids_like(whole.ids, ids[lo:hi]), documents=part,
            payloads=pays[lo:hi], tenant=whole.tenant, grant_to=whole.grant_to,
        ))  # fmt: skip
        t0 = t1
    return out


# The rows of a part of a write, by the split that made it: a part's error is told in the
# whole's rows (`fitted`).
_ROWS: dict[Any, Rows[Any]] = {
    split_upsert: lambda part: int(part.vectors.count),
    split_documents: lambda part: int(part.documents.count),
}


class StreamParts:
    """An upsert stream's batches as wire messages within half the client's budget. A batch
    larger than that goes as several messages of consecutive rows (not atomic as a whole;
    before, the whole stream failed REQUEST_TOO_LARGE: `vecdb ingest` of 10,000 x 2,048-d
    rows, 82 MB, to a server's 64 MiB); its ack comes once every part is acknowledged, and a
    server error about a part names the batch's own seq and rows. Wire seqs count messages."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._next = 0  # the next message's wire seq
        self._parts: dict[int, tuple[int, int, bool]] = {}  # wire seq -> seq, first row, last
        self._upserted: dict[int, int] = {}  # seq -> rows acknowledged of its earlier parts

    def messages(self, seq: int, batch: pb.UpsertRequest) -> list[pb.UpsertStreamRequest]:
        """The wire messages of batch `seq`."""
        parts = split_upsert(batch, self.budget.max_bytes)
        out, row = [], 0
        for i, part in enumerate(parts):
            self._parts[self._next] = (seq, row, i == len(parts) - 1)
            out.append(pb.UpsertStreamRequest(seq=self._next, batch=part))
            self._next += 1
            row += part.vectors.count
        return out

    def ack(self, ack: pb.UpsertStreamAck) -> tuple[int, int] | None:
        """(seq, rows upserted) once the last part of a batch is acknowledged, else None."""
        seq, _, last = self._parts.pop(ack.seq)
        total = self._upserted.pop(seq, 0) + int(ack.upserted)
        if last:
            return seq, total
        self._upserted[seq] = total
        return None

    def error(self, err: VecdbError) -> VecdbError:
        """`err` told in the batch's seq and rows ("batch seq=S: vectors[R]..."); a server's
        limit it names is kept for later calls."""
        self.budget.learn(err)
        got = _STREAM_ERROR.match(err.message)
        if got is not None and int(got.group(1)) in self._parts:
            seq, row, _ = self._parts[int(got.group(1))]
            err.message = f"batch seq={seq}: {shift_row(got.group(2), row)}"
            err.args = (err.message,)
            err.field = None if err.field is None else shift_row(err.field, row)
        return err


_STREAM_ERROR = re.compile(r"batch seq=(\d+): (.*)", re.S)
_ROW = re.compile(r"^(ids|vectors|payloads|documents|weights)\[(\d+)\]")


def shift_row(text: str, by: int) -> str:
    """`text` with its leading "vectors[R]" (ids, payloads, documents, weights) as R + `by`."""
    return _ROW.sub(lambda m: f"{m.group(1)}[{int(m.group(2)) + by}]", text, count=1)


# ------------------------------------------------------------------------ reads


def halve_ids(req: Any) -> list[Any] | None:
    """A Get or GetDocuments request as two requests of half its ids each (None for one
    id)."""
    ids = _id_values(req.ids)
    if ids is None or len(ids) < 2:
        return None
    mid = len(ids) // 2
    out = []
    for values in (ids[:mid], ids[mid:]):
        part = type(req)()
        part.CopyFrom(req)
        part.ids.CopyFrom(_ids_like(req.ids, values))
        out.append(part)
    return out


def halve_scroll(req: pb.ScrollRequest) -> list[pb.ScrollRequest] | None:
    """A Scroll request with half its limit (None at 1): a shorter page, same next offset
    rule."""
    limit = req.limit if req.HasField("limit") else DEFAULT_SCROLL_LIMIT
    if limit < 2:
        return None
    part = pb.ScrollRequest()
    part.CopyFrom(req)
    part.limit = limit // 2
    return [part]


def split_search(req: AnySearch, max_bytes: int) -> list[AnySearch]:
    """A search, or several of consecutive queries, each within half a message, if its
    queries, or the nq x k hits it may answer, are more than that (a server refuses a
    search whose hits cannot fit before it runs). Cheap for the usual single query (issue
    12)."""
    if isinstance(req, PackedSearch):
        q, opts = req.msg.queries, req.msg.options
        n, size = q.count, req.rows.nbytes
    else:
        q, opts = req.queries, req.options
        n = q.count
        if n < 2 or q.row_lengths:
            return [req]  # one query; or ragged rows, which the engine names
        size = 4 * n * q.dim
    if n < 2 or n > config.MAX_QUERIES:
        return [req]
    half = max_bytes // 2
    hit = _hit_bytes(opts.k, 4 * q.dim if opts.with_vectors else 0)
    if size <= half and n * hit <= half:
        return [req]
    per = max(1, min(half // max(1, 4 * q.dim), half // max(1, hit)))
    return _search_parts(req, [(lo, min(n, lo + per)) for lo in range(0, n, per)])


def _hit_bytes(k: int, vector_bytes: int) -> int:
    """The least answer bytes of one query: k hits (`config.MIN_HIT_BYTES` each, plus their
    vectors); 0 for a k the engine refuses."""
    return k * (config.MIN_HIT_BYTES + vector_bytes) if 1 <= k <= config.MAX_K else 0


def halve_search(req: AnySearch) -> list[AnySearch] | None:
    """A search as two of half its queries each (None for one query)."""
    q = req.queries
    n = q.count
    if n < 2 or q.row_lengths:
        return None
    return _search_parts(req, [(0, n // 2), (n // 2, n)])


def _search_parts(req: AnySearch, bounds: list[tuple[int, int]]) -> list[AnySearch]:
    """The search of queries [lo, hi) for each bound: every other field as in `req`."""
    out: list[AnySearch] = []
    if isinstance(req, PackedSearch):
        for lo, hi in bounds:
            msg = pb.SearchRequest()
            msg.CopyFrom(req.msg)  # holds no query bytes: they are the rows
            msg.queries.count = hi - lo
            out.append(PackedSearch(msg, req.rows[lo:hi]))
        return out
    dim = req.queries.dim
    data, row = req.queries.data, 4 * dim
    shell = pb.SearchRequest()
    shell.CopyFrom(req)
    shell.ClearField("queries")  # copied once, not once a part
    for lo, hi in bounds:
        msg = pb.SearchRequest()
        msg.CopyFrom(shell)
        msg.queries.CopyFrom(pb.Vectors(dim=dim, count=hi - lo, data=data[lo * row : hi * row]))
        out.append(msg)
    return out


def split_document_search(
    req: pb.SearchDocumentsRequest, max_bytes: int
) -> list[pb.SearchDocumentsRequest]:
    """A search_documents request, or several of consecutive queries, each within half a
    message, if its queries, or the nq x k hits it may answer, are more than that."""
    q = req.queries
    n = q.count
    if req.single or n < 2 or n > config.MAX_QUERIES or q.dim == 0 or len(q.has_weights):
        return [req]  # one query, or what the server refuses as it is
    counts = list(q.token_counts)
    hit = _hit_bytes(req.options.k, 0)
    if len(counts) != n or (4 * q.dim * sum(counts) <= max_bytes // 2
                            and n * hit <= max_bytes // 2):  # fmt: skip
        return [req]
    groups = _groups([4 * q.dim * c + hit for c in counts], max_bytes // 2)
    return _document_search_parts(req, groups) or [req]


def halve_document_search(req: pb.SearchDocumentsRequest) -> list[Any] | None:
    """A search_documents request as two of half its queries each (None for one query)."""
    q = req.queries
    n = q.count
    if req.single or n < 2 or q.dim == 0 or len(q.has_weights) or len(q.token_counts) != n:
        return None
    return _document_search_parts(req, [(0, n // 2), (n // 2, n)])


def _document_search_parts(
    req: pb.SearchDocumentsRequest, bounds: list[tuple[int, int]]
) -> list[pb.SearchDocumentsRequest] | None:
    """The search of queries [lo, hi) for each bound (None if the bytes do not add up: the
    server names that fault)."""
    q = req.queries
    counts, data, row = list(q.token_counts), q.data, 4 * q.dim
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()
    if starts[-1] * row != len(data):
        return None
    shell = pb.SearchDocumentsRequest()
    shell.CopyFrom(req)
    shell.ClearField("queries")  # copied once, not once a part
    out = []
    for lo, hi in bounds:
        part = pb.SearchDocumentsRequest()
        part.CopyFrom(shell)
        part.queries.CopyFrom(pb.Documents(
            dim=q.dim, count=hi - lo, token_counts=counts[lo:hi],
            data=data[starts[lo] * row : starts[hi] * row],
        ))  # fmt: skip
        out.append(part)
    return out


# ------------------------------------------------------------------------ merging


def merge_results(parts: Sequence[SearchResult], averaged: Sequence[str] = ()) -> SearchResult:
    """The one result of a search sent in parts of consecutive queries: rows in order, stats
    summed (`averaged` keys: the mean over all the queries, as one call reports them)."""
    if len(parts) == 1:
        return parts[0]
    if len({p.ids.shape[1] for p in parts}) != 1:
        raise Internal("the parts of a split search answered with different k")
    payloads = None if any(p.payloads is None for p in parts) else [
        row for p in parts for row in p.payloads or ()]  # fmt: skip
    vectors = None if any(p.vectors is None for p in parts) else [
        row for p in parts for row in p.vectors or ()]  # fmt: skip
    stats = None if any(p.stats is None for p in parts) else _stats(
        [p.stats or {} for p in parts], averaged)  # fmt: skip
    return SearchResult(
        ids=np.concatenate([p.ids for p in parts]),
        distances=np.concatenate([p.distances for p in parts]),
        payloads=payloads, vectors=vectors, stats=stats,
        degraded="; ".join(dict.fromkeys(p.degraded for p in parts if p.degraded)),
        missing_shards=list(dict.fromkeys(s for p in parts for s in p.missing_shards)),
    )  # fmt: skip


def _stats(parts: Sequence[dict[str, float]], averaged: Sequence[str]) -> dict[str, float]:
    total: dict[str, float] = {}
    for stats in parts:
        queries = stats.get("queries", 0)
        for key, value in stats.items():
            total[key] = total.get(key, 0) + (value * queries if key in averaged else value)
    queries = sum(s.get("queries", 0) for s in parts)
    for key in averaged:
        if key in total:
            total[key] = total[key] / queries if queries else 0.0
    return total
