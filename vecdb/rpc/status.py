"""vecdb errors <-> gRPC statuses with google.rpc rich details (grpcio-status).

The server turns a `VecdbError` into a status code, its message, and a `google.rpc.Status` in
the `grpc-status-details-bin` trailer carrying ErrorInfo (reason, domain "vecdb", request id),
BadRequest (one FieldViolation: the field path and the message) when a field is at fault, and
RetryInfo when `retry_after` is known. The remote clients decode the same trailer back into
the same class with the same `message`, `field`, `reason` and `retry_after`, so user code
cannot tell which mode raised it. grpcio's own refusal of a message above a size limit,
which has no details, is read into a `ResourceExhausted` that says which message was too
large and what to do (`message_too_large`). The .proto header documents this for other
languages. Must not import the engine, the server or the clients.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from vecdb.errors import (
    ERROR_BY_CODE,
    DiskFull,
    Internal,
    ResourceExhausted,
    StorageError,
    StorageLocked,
    VecdbError,
)

# Subclasses a client rebuilds from (code, ErrorInfo reason): the same class in both modes.
ERROR_BY_REASON: dict[tuple[str, str], type[VecdbError]] = {
    (cls.code, reason): cls
    for cls, reason in (
        (DiskFull, "DISK_FULL"),
        (StorageLocked, "STORAGE_LOCKED"),
        (StorageError, "STORAGE_IO_ERROR"),
    )
}
# Reasons of a message above a size limit (`limits.max_message_bytes`): an answer the server
# measured before sending (or grpcio refused to send), a request grpcio refused to receive.
ANSWER_TOO_LARGE, REQUEST_TOO_LARGE = "ANSWER_TOO_LARGE", "REQUEST_TOO_LARGE"
# grpcio's own refusal, which carries no details: "SERVER: Received message larger than max
# (2097217 vs. 1048576)"; which side said it, and whether it received or sent, tell whether
# the request or the answer was too large.
_GRPC_TOO_LARGE = re.compile(
    r"(?:(CLIENT|SERVER): )?(Received|Sent) message larger than max \((\d+) vs\. (\d+)\)"
)
_SERVER_LIMIT = re.compile(r"over the server's message limit of ([\d,]+) bytes")
DOMAIN = "vecdb"
DETAILS_KEY = "grpc-status-details-bin"  # the standard trailer of the rich error model
REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True)
class RichStatus(grpc.Status):  # type: ignore[misc]
    """What `ServicerContext.abort_with_status` needs: code, details and trailing metadata."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def status_of(err: VecdbError) -> grpc.StatusCode:
    """The gRPC status code a vecdb error travels as."""
    return grpc.StatusCode[err.code]


def _pack(message: Any) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def to_status(err: VecdbError, request_id: str) -> RichStatus:
    """The status (code, message, details trailer, request id trailer) of `err`."""
    code = status_of(err)
    details = [_pack(error_details_pb2.ErrorInfo(
        reason=err.reason, domain=DOMAIN, metadata={"request_id": request_id}
    ))]  # fmt: skip
    if err.field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=err.field, description=err.message
        )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if err.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(err.retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    rich = status_pb2.Status(code=code.value[0], message=err.message, details=details)
    trailers = ((REQUEST_ID_KEY, request_id), (DETAILS_KEY, rich.SerializeToString()))
    return RichStatus(code, err.message, trailers)


def error_from_rpc(
    code: grpc.StatusCode | None,
    details: str | None,
    trailing_metadata: Iterable[Any] | None = None,
) -> VecdbError:
    """The vecdb error for a status a client received: the class of its code (unknown codes:
    Internal), its message, and `field` / `reason` / `retry_after` from the rich details."""
    name = code.name if code is not None else "UNKNOWN"
    cls = ERROR_BY_CODE.get(name, Internal)
    message = details or name.lower().replace("_", " ")
    field = reason = None
    retry_after: float | None = None
    for rich in _details_of(trailing_metadata):
        if rich.message:
            message = rich.message
        for item in rich.details:
            if item.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                item.Unpack(info)
                reason = info.reason or None
            elif item.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                item.Unpack(bad)
                field = bad.field_violations[0].field if bad.field_violations else None
            elif item.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                item.Unpack(retry)
                retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    cls = ERROR_BY_REASON.get((name, reason or ""), cls)
    if reason is None and name == "RESOURCE_EXHAUSTED":
        too_large = message_too_large(message)
        if too_large is not None:
            return too_large
    return cls(message, field=field, reason=reason, retry_after=retry_after)


def message_too_large(details: str) -> VecdbError | None:
    """grpcio's refusal of a message above its size limit (`details` of a status without
    vecdb's trailer) as a `ResourceExhausted` naming the size, the limit and what to do, with
    reason REQUEST_TOO_LARGE or ANSWER_TOO_LARGE; None for any other text."""
    got = _GRPC_TOO_LARGE.search(details)
    if got is None:
        return None
    side, verb, size, limit = got.group(1), got.group(2), int(got.group(3)), int(got.group(4))
    request = (verb == "Received") == (side != "CLIENT")  # the server received, the client sent
    what = "request" if request else "answer"
    end = (
        "send less per call (the SDK sends upserts, document upserts and search batches "
        "in parts within it; one document or query this large does not fit), or raise the "
        "server's limit"
        if request
        else "ask for less per call (lower k or limit, fewer ids, without payloads or "
        "vectors), or raise the server's limit"
    )
    whose = "the client's" if side == "CLIENT" else "the server's"
    setting = "max_message_bytes" if side == "CLIENT" else "limits.max_message_bytes"
    return ResourceExhausted(
        f"the {what} is {size:,} bytes, over {whose} message limit of {limit:,} bytes "
        f"({setting}): {end}",
        reason=REQUEST_TOO_LARGE if request else ANSWER_TOO_LARGE,
    )


def server_limit(err: VecdbError) -> int | None:
    """The server's message limit named by a `message_too_large` refusal of a request by a
    server (the SDK splits the request at it); None for any other error."""
    got = _SERVER_LIMIT.search(err.message) if err.reason == REQUEST_TOO_LARGE else None
    return int(got.group(1).replace(",", "")) if got else None


def error_of(exc: Any) -> VecdbError:
    """The vecdb error of a failed call's `grpc.RpcError` (sync or `grpc.aio`)."""
    return error_from_rpc(exc.code(), exc.details(), exc.trailing_metadata())


def _details_of(metadata: Iterable[Any] | None) -> list[status_pb2.Status]:
    out = []
    for item in metadata or ():
        key, value = item if isinstance(item, tuple) else (item.key, item.value)
        if key == DETAILS_KEY and isinstance(value, bytes):
            try:
                out.append(status_pb2.Status.FromString(value))
            except Exception:  # a proxy's garbage must not hide the status code itself
                continue
    return out


def retry_delay(err: VecdbError, default: float) -> float:
    """How long to wait before retrying `err`: its retry_after when finite, else `default`."""
    ra = err.retry_after
    return default if ra is None or not math.isfinite(ra) or ra < 0 else ra
