"""The one error hierarchy of vecdb.

A leaf module: imports nothing from vecdb and not grpc either. Each class carries the name of
the gRPC status code it maps to (`code`); `vecdb.rpc.status` turns names into real codes and
structured details (google.rpc BadRequest / ErrorInfo / RetryInfo) so the server and the
remote client agree, and user code catches the same class, with the same `message`, `field`,
`reason` and `retry_after`, in both modes.
"""

from __future__ import annotations

import errno

MAX_MESSAGE_CHARS = 512  # longer messages are cut: they travel in gRPC metadata (16 KiB cap)
MAX_ECHO_CHARS = 128  # user values echoed in a message (names, ids, keys) are cut to this
# Reason of a write refused because its collection's write buffer is over its cap and has
# been for the engine's `stall_timeout`: the index is catching up; retry after `retry_after`.
BUFFER_FULL = "BUFFER_FULL"


def cut(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` shortened to at most `limit` characters, ending in "..." when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def echo(value: object) -> str:
    """The repr of a user value for a message, cut to MAX_ECHO_CHARS (numpy scalars shown as
    the Python value they stand for, so both SDK modes print the same)."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        value = item()
    return cut(repr(value))


class VecdbError(Exception):
    """Base class of every error vecdb raises on purpose.

    `message` names the field at fault; `field` is that field's request path when one field
    is at fault (`vectors[3]`, `ids[0]`, `payloads[2]`, `k`, `filter.year.$gte`), else None;
    `reason` is a stable UPPER_SNAKE code (the status code name unless something more precise
    applies; listed in the .proto header); `retry_after` is the seconds after which a retry
    may succeed, when known.
    """

    code: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = cut(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason or self.code
        self.retry_after = retry_after  # seconds after which a retry may succeed, if known


class InvalidArgument(VecdbError, ValueError):
    """The request is malformed: wrong dimension, NaN, bad name, k out of range, ..."""

    code = "INVALID_ARGUMENT"


class NotFound(VecdbError, KeyError):
    """A named collection or tenant does not exist."""

    code = "NOT_FOUND"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class AlreadyExists(VecdbError):
    """Creating something that exists already."""

    code = "ALREADY_EXISTS"


class PermissionDenied(VecdbError):
    """The caller's key may not do this (read-only key writing, tenant not granted)."""

    code = "PERMISSION_DENIED"


class Unauthenticated(VecdbError):
    """No valid credentials were presented."""

    code = "UNAUTHENTICATED"


class ResourceExhausted(VecdbError):
    """A size cap, quota or concurrency limit was hit."""

    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(VecdbError):
    """The system is not in a state where the request can run (e.g. wrong collection kind)."""

    code = "FAILED_PRECONDITION"


class Unavailable(VecdbError):
    """Temporarily unable to serve (shutting down, read-only after an I/O error). Retryable."""

    code = "UNAVAILABLE"


class DeadlineExceeded(VecdbError):
    """The caller's deadline passed before the work finished."""

    code = "DEADLINE_EXCEEDED"


class DataLoss(VecdbError):
    """Corruption was detected that cannot be repaired for this request."""

    code = "DATA_LOSS"


class StorageLocked(Unavailable):
    """Another process holds the data directory's lock."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = "STORAGE_LOCKED",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, field=field, reason=reason, retry_after=retry_after)


class DiskFull(ResourceExhausted):
    """The disk holding the data directory is full (or below the free-space reserve):
    writes are refused, reads go on, and writes resume by themselves once space is freed.
    `need`: the bytes an index job that was not started would write, when known."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = "DISK_FULL",
        retry_after: float | None = 1.0,
        need: int | None = None,
    ) -> None:
        super().__init__(message, field=field, reason=reason, retry_after=retry_after)
        self.need = need


class StorageError(Unavailable):
    """An I/O error of the disk or file system (EIO, a failed fsync, a file that cannot be
    opened); the message names the path."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = "STORAGE_IO_ERROR",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, field=field, reason=reason, retry_after=retry_after)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def os_error(exc: OSError, what: str) -> VecdbError:
    """The vecdb error of an `OSError` met while doing `what` (which names the path): the
    errno decides, never the message text. ENOSPC / EDQUOT is `DiskFull`, anything else a
    `StorageError`."""
    text = exc.strerror or type(exc).__name__
    if exc.errno in NO_SPACE:
        return DiskFull(f"{what}: no space left on the disk ({text})")
    return StorageError(f"{what}: {text} (errno {exc.errno})")


class FormatError(DataLoss):
    """A file has a bad magic, an unsupported format version, or a failed checksum."""


class Internal(VecdbError):
    """An unexpected failure; the message is generic and carries a request id."""

    code = "INTERNAL"


ERROR_BY_CODE: dict[str, type[VecdbError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
        DataLoss,
        Internal,
    )
}


class Unimplemented(VecdbError):
    """The feature is not built yet (e.g. a collection kind that is planned)."""

    code = "UNIMPLEMENTED"


ERROR_BY_CODE[Unimplemented.code] = Unimplemented
