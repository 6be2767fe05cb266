"""Connection plumbing shared by the sync and the async remote client: target parsing, TLS
settings and credentials, channel options and the message size, auth metadata, the retry
backoff schedule and the retry rule.

Owns no calls: `vecdb.client.remote` and `vecdb.client.aio` make them. Imports grpc, the
wire's status decoding and stubs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from vecdb import config
from vecdb.client.plain_requests import serialize_search
from vecdb.errors import InvalidArgument, VecdbError
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT = 60.0  # seconds per call unless `timeout=` is given
OPTIMIZE_TIMEOUT = 3600.0  # optimize may rebuild an index (also snapshot create / restore)
# The message limit the SDK splits requests at (half of it, as parts): the server's default
# limits.max_message_bytes; a client of a server with another limit is given it.
MAX_MESSAGE_BYTES = config.DEFAULT_MAX_MESSAGE_BYTES
BACKOFF_START, BACKOFF_MAX = 0.05, 2.0  # seconds between two attempts (jittered, doubling)
LAST_ATTEMPT = 0.05  # seconds an attempt is given at least before the call's deadline
RECONNECT_MAX = 2.0  # most seconds between two connection attempts of a channel
DEFAULT_STREAM_WINDOW = 4  # batches in flight before the first ack tells the server's window
LIST_PAGE_SIZE = 1000  # collections per ListCollections page (the server's maximum)


@dataclass(frozen=True)
class TLS:
    """TLS settings of a remote connection (all paths are PEM files)."""

    ca: str | None = None  # CA bundle that signed the server certificate (None: system roots)
    cert: str | None = None  # client certificate, for servers requiring mTLS
    key: str | None = None  # client private key, with `cert`
    server_name: str | None = None  # expected name in the server certificate, if not the host


def parse_target(target: str, tls: Any) -> tuple[str, TLS | None]:
    """Split "grpc[s]://host:port" / "host:port" and normalise `tls` to a `TLS` or None."""
    secure = target.startswith("grpcs://")
    address = target.split("://", 1)[1] if "://" in target else target
    if tls is None or tls is False:
        return address, TLS() if secure else None
    if tls is True:
        return address, TLS()
    if isinstance(tls, TLS):
        return address, check_tls(tls)
    if isinstance(tls, (str, Path)):
        return address, check_tls(TLS(ca=str(tls)))
    if isinstance(tls, dict):
        unknown = sorted(str(k) for k in tls if k not in TLS_FIELDS)
        if unknown:
            raise InvalidArgument(f"tls has unknown keys {unknown} (known: "
                                  f"{', '.join(TLS_FIELDS)})", field="tls")  # fmt: skip
        return address, check_tls(TLS(**tls))
    raise InvalidArgument("tls must be None, True, a CA file path, a dict or a vecdb TLS")


TLS_FIELDS = ("ca", "cert", "key", "server_name")
# what each PEM file must hold: grpc's core aborts the whole process on a certificate without
# its key, and takes other bad files for an unreachable server
_PEM = {"ca": b"-----BEGIN CERTIFICATE-----", "cert": b"-----BEGIN CERTIFICATE-----",
        "key": b"PRIVATE KEY-----"}  # fmt: skip


def check_tls(tls: TLS) -> TLS:
    """`tls` if its files make sense: a client certificate with its key, each path a
    readable PEM file of its kind; else InvalidArgument naming the field."""
    if (tls.cert is None) != (tls.key is None):
        raise InvalidArgument("tls needs both 'cert' and 'key' for a client certificate (mutual "
                              "TLS), or neither", field="tls.key" if tls.key is None else "tls.cert")  # fmt: skip
    for name, marker in _PEM.items():
        path = getattr(tls, name)
        if path is None:
            continue
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"tls.{name}: cannot read {path!r}: {exc.strerror or exc}",
                                  field=f"tls.{name}") from None  # fmt: skip
        if marker not in data:
            raise InvalidArgument(f"tls.{name}: {path!r} is not a PEM file holding "
                                  f"{marker.decode().strip('-')}", field=f"tls.{name}")  # fmt: skip
    return tls


def channel_credentials(tls: TLS) -> grpc.ChannelCredentials:
    """gRPC credentials for `tls`."""

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(
        root_certificates=read(tls.ca), private_key=read(tls.key), certificate_chain=read(tls.cert)
    )


def check_max_message_bytes(value: Any) -> int:
    """A client's `max_message_bytes`: an integer within the bounds of the server's
    `limits.max_message_bytes` (`vecdb.config`)."""
    lo, hi = config.MIN_MAX_MESSAGE_BYTES, config.MAX_MAX_MESSAGE_BYTES
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidArgument(
            f"max_message_bytes={value!r} is out of range [{lo}, {hi}]: give the server's "
            "limits.max_message_bytes",
            field="max_message_bytes",
        )
    return value


def channel_options(tls: TLS | None) -> list[tuple[str, Any]]:
    """Options shared by the sync and the async channel. No message size limit of the
    client's own: the server's is the one that counts (it measures its answers before it
    sends them, and the SDK splits big requests at `max_message_bytes`), so an answer of a
    server configured above the default is received and a request the SDK cannot split
    reaches the server, which judges it (`vecdb.client.splits`)."""
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.enable_retries", 0),  # retries are ours: idempotent calls only (RemoteClient._call)
        # Reconnect to a restarted server within RECONNECT_MAX of its return: gRPC's own
        # backoff grows to 120 s, and a call retried until its deadline would wait for it.
        ("grpc.max_reconnect_backoff_ms", int(RECONNECT_MAX * 1000)),
    ]
    if tls is not None and tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return opts


def long_call_timeout(timeout: float | None) -> float:
    """The deadline of a call that may rebuild an index or copy a collection (optimize,
    create / restore snapshot): OPTIMIZE_TIMEOUT, or the client's `timeout` if longer. The
    client's timeout is meant for everyday calls: a short one (2 s) must not cut a training
    that goes on on the server anyway."""
    return max(timeout or 0.0, OPTIMIZE_TIMEOUT)


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def backoff_delays() -> Iterator[float]:
    """Full-jitter exponential backoff: 0-50 ms, 0-100 ms, ... capped at 2 s, without end:
    the call's deadline ends the retries (`retry_wait`), so a server restarting within it
    (a few seconds) is waited for, as the README promises, instead of giving up after a
    fixed number of attempts (~1 s of them before)."""
    delay = BACKOFF_START
    while True:
        yield random.uniform(0, delay)
        delay = min(delay * 2, BACKOFF_MAX)


def retry_wait(err: VecdbError, delays: Iterator[float], deadline: float) -> float | None:
    """Seconds to wait before retrying a call that failed with `err`, or None to raise it: only
    UNAVAILABLE is retried, while `delays` lasts (for ever for idempotent calls, not at all
    for others), waiting at least the server's RetryInfo, and only while LAST_ATTEMPT is left
    before the call's `deadline` (a `time.monotonic()` instant) after the wait: a backoff
    delay reaching past that is cut short, so the last attempt is made just before the
    deadline rather than the call giving up early."""
    if err.code != "UNAVAILABLE":
        return None
    delay = next(delays, None)
    if delay is None:
        return None
    floor = status.retry_delay(err, 0.0)  # the server's RetryInfo: never sooner than that
    room = deadline - time.monotonic() - LAST_ATTEMPT
    if room <= 0 or floor > room:
        return None
    return min(max(delay, floor), room)


def vectordb_stub(channel: Any) -> pb_grpc.VectorDBStub:
    """The generated stub of a sync or asyncio channel, whose Search and SearchStream also
    send a `PackedSearch` (a big batch, its queries written once into the wire bytes)."""
    stub = pb_grpc.VectorDBStub(channel)  # type: ignore[no-untyped-call]
    answer = pb.SearchResponse.FromString
    stub.Search = channel.unary_unary(
        "/vecdb.v1.VectorDB/Search", request_serializer=serialize_search,
        response_deserializer=answer, _registered_method=True,
    )  # fmt: skip
    stub.SearchStream = channel.stream_stream(
        "/vecdb.v1.VectorDB/SearchStream", request_serializer=serialize_search,
        response_deserializer=answer, _registered_method=True,
    )  # fmt: skip
    return stub
