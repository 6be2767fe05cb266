"""The router's connections to its shards: one channel and stub per shard address, calls
sent to several shards at once, per-shard deadlines and per-shard status.

Every shard call carries the caller's credentials (`authorization` / `api-key`) and
`x-request-id`, so the shards authenticate, authorise and log the call as their own; and a
deadline: the client's remaining time minus `deadline_margin_ms` (room to merge and answer),
or `default_deadline_s` when the client set none, except for long admin calls (`long=True`:
Optimize that waits, snapshots, payload index builds), which then get no deadline, as on a
node. Calls to several shards go out together as
gRPC futures (the channels multiplex them; no thread waits per shard) and are collected in
shard order. A shard's own error (it carries vecdb's rich status: ErrorInfo domain "vecdb")
is handed on unchanged (class, message, field, reason, retry-after); a shard that cannot be
reached or misses its deadline is *missing*: strict calls fail UNAVAILABLE naming every
missing shard by index and address, partial calls (`allow_partial`) answer from the others
and list the missing ones. Owns connections and calls only; what to send where is the
router's, merging is `vecdb.cluster.merge`'s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from vecdb import config
from vecdb.errors import DeadlineExceeded, Unavailable, VecdbError
from vecdb.rpc.status import DETAILS_KEY, REQUEST_ID_KEY, error_of
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc

# Defaults of `cluster.deadline_margin_ms` / `cluster.default_deadline_s` (bounds: the config).
DEFAULT_DEADLINE_MARGIN_MS, DEFAULT_DEADLINE_S = 50, 10.0
RECONNECT_MIN_MS, RECONNECT_MAX_MS = 100, 1000  # channel reconnect backoff to a lost shard
PARTIAL_METHODS = ("Search", "SearchBatch", "Count", "SearchDocuments")  # allow_partial ones
NO_DEADLINE = 1e9  # seconds: a "remaining time" beyond this means the client set no deadline
FORWARDED = ("authorization", "api-key", REQUEST_ID_KEY)  # metadata the shards need too
MISSING_REASON = "SHARD_UNAVAILABLE"
_MISSING_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                  grpc.StatusCode.CANCELLED)  # fmt: skip


@dataclass
class FanOut:
    """What a call to several shards gave: answers by shard index, and the shards missing
    (index -> why), in shard order."""

    answers: dict[int, Any] = field(default_factory=dict)
    errors: dict[int, VecdbError] = field(default_factory=dict)  # the shards' own errors
    missing: dict[int, str] = field(default_factory=dict)


class ShardSet:
    """Channels to the shards of the catalog's shard map (rebuilt when the map changes)."""

    def __init__(
        self, addresses: Sequence[str], *, margin_ms: int = DEFAULT_DEADLINE_MARGIN_MS,
        default_deadline_s: float = DEFAULT_DEADLINE_S,
        max_message_bytes: int = config.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:  # fmt: skip
        self._margin = margin_ms / 1000.0  # seconds kept back from the client's deadline
        self._default = default_deadline_s  # per-shard deadline when the client set none
        self._options = [
            # A shard's answer is bounded by the shard's own limit (it refuses a larger one
            # clearly); the router measures what it answers against its own (`CallGuard`), so
            # a merged answer over it is ANSWER_TOO_LARGE, which the SDK asks for in parts.
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", max_message_bytes),
            # A shard back from a restart is reached within ~0.1-1 s, not after grpcio's
            # default reconnect backoff (1 s growing to 120 s), during which calls fail fast.
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_MIN_MS),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_MIN_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
        ]
        self._lock = threading.Lock()
        self.addresses: tuple[str, ...] = ()  # shard i listens at addresses[i]
        self._channels: list[grpc.Channel] = []
        self._stubs: list[pb_grpc.VectorDBStub] = []
        self.update(addresses)

    def update(self, addresses: Sequence[str]) -> None:
        """Follow the shard map: new channels when it changed, the old ones closed."""
        addresses = tuple(addresses)
        with self._lock:
            if addresses == self.addresses:
                return
            old = self._channels
            self._channels = [grpc.insecure_channel(a, options=self._options) for a in addresses]
            self._stubs = [pb_grpc.VectorDBStub(c) for c in self._channels]  # type: ignore[no-untyped-call]
            self.addresses = addresses
        for ch in old:
            ch.close()

    def close(self) -> None:
        with self._lock:
            for ch in self._channels:
                ch.close()
            self._channels, self._stubs, self.addresses = [], [], ()

    def __len__(self) -> int:
        return len(self.addresses)

    def name(self, shard: int) -> str:
        """How errors and `missing_shards` name a shard: "index (address)"."""
        return f"{shard} ({self.addresses[shard]})"

    # -- calls -----------------------------------------------------------------------------

    def timeout(self, ctx: grpc.ServicerContext | None, *, long: bool = False) -> float | None:
        """The per-shard deadline in seconds for a call answering `ctx` (None: no deadline,
        for a `long` call whose client set none)."""
        remaining = ctx.time_remaining() if ctx is not None else None
        if remaining is None or remaining > NO_DEADLINE:  # grpcio: ~2^63 s when none was set
            return None if long else self._default
        if remaining <= 0:
            raise DeadlineExceeded("the call's deadline passed before the shards were asked")
        # The margin is kept to merge and answer; a call with less time left than that (a
        # client's retry late in its deadline) still asks the shards, for half of what is
        # left, so that a missing shard is named as such rather than the call refused.
        return max(float(remaining) - self._margin, float(remaining) / 2)

    def call(self, shard: int, method: str, request: Any, ctx: grpc.ServicerContext | None) -> Any:
        """One call to one shard; a shard error as it was, a missing shard as Unavailable."""
        out = self.fan_out(method, {shard: request}, ctx)
        return out.answers[shard]

    def fan_out(
        self, method: str, requests: Mapping[int, Any], ctx: grpc.ServicerContext | None,
        *, allow_partial: bool = False, check: bool = True, long: bool = False,
    ) -> FanOut:  # fmt: skip
        """Send `requests[i]` to shard i, all at once; collect in shard order. With `check`,
        a shard error is raised as it came (the first in shard order) and missing shards as
        one Unavailable naming them all, unless `allow_partial`. `long`: see `timeout`."""
        timeout = self.timeout(ctx, long=long)
        md = metadata_of(ctx)
        with self._lock:
            stubs = self._stubs
        pending = {}
        for shard in sorted(requests):
            rpc = getattr(stubs[shard], method)
            pending[shard] = rpc.future(requests[shard], timeout=timeout, metadata=md)
        out = FanOut()
        for shard, fut in pending.items():
            try:
                out.answers[shard] = fut.result()
            except grpc.RpcError as exc:
                if _from_shard(exc):
                    out.errors[shard] = error_of(exc)
                else:
                    out.missing[shard] = _why(exc)
        if check:
            self.check(out, allow_partial, partial_ok=method in PARTIAL_METHODS)
        return out

    def check(self, out: FanOut, allow_partial: bool = False, *, partial_ok: bool = False) -> None:
        """Raise what `out` holds: the first shard error, else the missing shards (unless
        partial answers are allowed and at least one shard answered)."""
        if out.errors:
            raise out.errors[min(out.errors)]
        if out.missing and not (allow_partial and out.answers):
            raise self.missing_error(out.missing, read=partial_ok)

    def stream(
        self, method: str, shard: int, requests: Any, ctx: grpc.ServicerContext | None
    ) -> Any:
        """A streaming call to one shard; iterate the answer (errors via `translate`)."""
        with self._lock:
            stub = self._stubs[shard]
        return getattr(stub, method)(requests, timeout=self.timeout(ctx), metadata=metadata_of(ctx))

    def translate(self, shard: int, exc: grpc.RpcError) -> VecdbError:
        """The error a failed shard call stands for (see the module docstring)."""
        if _from_shard(exc):
            return error_of(exc)
        return self.missing_error({shard: _why(exc)})

    def missing_error(self, missing: Mapping[int, str], *, read: bool = False) -> Unavailable:
        """UNAVAILABLE naming the missing shards (`read`: a call that could be partial, and
        the message says how)."""
        named = "; ".join(f"shard {self.name(s)}: {why}" for s, why in sorted(missing.items()))
        hint = " (allow_partial=True answers from the others)" if read else ""
        return Unavailable(f"shards did not answer: {named}{hint}", reason=MISSING_REASON,
                           retry_after=1.0)  # fmt: skip

    def missing_names(self, missing: Mapping[int, str]) -> list[str]:
        """`missing_shards` of a partial answer: the addresses of the missing shards."""
        return [self.addresses[s] for s in sorted(missing)]


def metadata_of(ctx: grpc.ServicerContext | None) -> tuple[tuple[str, str], ...]:
    """The caller's metadata the shards need (credentials and request id)."""
    if ctx is None:
        return ()
    out = []
    for item in ctx.invocation_metadata() or ():
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        if key in FORWARDED and isinstance(value, str):
            out.append((key, value))
    return tuple(out)


def _from_shard(exc: grpc.RpcError) -> bool:
    """Whether the shard itself answered this error (vecdb rich status), as opposed to the
    transport failing (refused connection, deadline, reset). A shard that is shutting down
    or past its deadline counts as missing too."""
    code = exc.code() if hasattr(exc, "code") else None
    if code in _MISSING_CODES:
        return False
    trailers: Callable[[], Any] | None = getattr(exc, "trailing_metadata", None)
    items = trailers() if trailers is not None else None
    return any(_key(item) == DETAILS_KEY for item in items or ())


def _key(item: Any) -> str:
    return str(item.key if hasattr(item, "key") else item[0])


def _why(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    name = code.name.lower().replace("_", " ") if code is not None else "failed"
    details = exc.details() if hasattr(exc, "details") else None
    return f"{name} ({details[:120]})" if details else name
