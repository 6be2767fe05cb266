"""Answers measured before they are sent: the server's side of `limits.max_message_bytes`.

grpcio refuses to send an answer above the channel's send limit with a bare
RESOURCE_EXHAUSTED ("Sent message larger than max"), after the work is done, without the
rich details, a log line or a hint. `Fit` serialises the answer itself (the bytes grpcio
would have made, so nothing is paid twice) and refuses one above the limit with a
`ResourceExhausted` of reason ANSWER_TOO_LARGE naming the answer's size, the limit and what
to change (k, limit, ids, with_payload, with_vectors, with_tokens, or the limit itself).
The guard (`vecdb.server.interceptors`) answers it like any error of the call: logged,
counted, the server unharmed. The SDK reads that reason and asks again in parts (halves of
the ids or queries, half the scroll limit; `vecdb.client.splits`). Owns no policy beyond
the message; must not import the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import EncodeError

from vecdb import config
from vecdb.errors import ResourceExhausted
from vecdb.rpc.status import ANSWER_TOO_LARGE

SEARCH_HINT = ("k", "lower k, search fewer queries per call, or ask without payloads "
               "(with_payload) or vectors (with_vectors)")  # fmt: skip
# method -> (the request field to change, what to change); others: the generic hint
HINTS: dict[str, tuple[str | None, str]] = {
    "Search": SEARCH_HINT,
    "SearchBatch": SEARCH_HINT,
    "SearchStream": SEARCH_HINT,
    "SearchDocuments": ("k", "lower k, search fewer queries per call, or ask without "
                             "payloads (with_payload)"),
    "Get": ("ids", "ask for fewer ids per call, or without vectors (with_vectors=false)"),
    "GetDocuments": ("ids", "ask for fewer ids per call, or without tokens "
                            "(with_tokens=false) or payloads (with_payload=false)"),
    "Scroll": ("limit", "lower limit, or ask without vectors (with_vectors) or payloads "
                        "(with_payload)"),
}  # fmt: skip
GENERIC_HINT: tuple[str | None, str] = (None, "ask for less per call")


def answer_too_large(method: str, size: int, limit: int, what: str = "") -> ResourceExhausted:
    """The error of an answer to `method` of `size` bytes above `limit` (`what`: how to say
    so, when it is not simply its size)."""
    field, hint = HINTS.get(method, GENERIC_HINT)
    what = what or f"the answer to {method} is {size:,} bytes"
    return ResourceExhausted(
        f"{what}, over this server's message limit of {limit:,} bytes "
        f"(limits.max_message_bytes): {hint}, or raise the server's limit",
        field=field, reason=ANSWER_TOO_LARGE,
    )  # fmt: skip


def hits_too_large(
    method: str, queries: int, k: int, vector_bytes: int, limit: int
) -> ResourceExhausted | None:
    """The error of a search of `queries` x `k` hits (each carrying `vector_bytes` of vector)
    that could not fit in `limit` even if every hit were found, before it runs: the engine
    holds nq x k hits whole (a 64 KB request of 16,384 queries at k 16,384 took 12 GB and
    49 s, then failed INTERNAL, protobuf refusing to encode it). None when it may fit, or
    when the engine will refuse `queries` or `k` itself."""
    if not (1 <= queries <= config.MAX_QUERIES and 1 <= k <= config.MAX_K):
        return None
    size = queries * k * (config.MIN_HIT_BYTES + vector_bytes)
    if size <= limit:
        return None
    return answer_too_large(method, size, limit, f"a search of {queries:,} queries x k={k:,} "
                            f"answers up to {queries * k:,} hits, at least {size:,} bytes")  # fmt: skip


class Fit:
    """`fit(answer)`: the wire bytes of an answer to `method`, or `answer_too_large`."""

    __slots__ = ("limit", "method", "serialize")

    def __init__(self, method: str, serialize: Callable[[Any], bytes], limit: int) -> None:
        self.method = method  # named in the error, and chooses its hint
        self.serialize = serialize  # the handler's own response serializer
        self.limit = limit  # limits.max_message_bytes

    def __call__(self, answer: Any) -> bytes:
        try:
            data = self.serialize(answer)
        except EncodeError:  # over protobuf's own 2 GiB, above any limit
            raise answer_too_large(self.method, 0, self.limit,
                                   f"the answer to {self.method} is over 2 GiB") from None  # fmt: skip
        if len(data) > self.limit:
            raise answer_too_large(self.method, len(data), self.limit)
        return data
