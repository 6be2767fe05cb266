"""Settings of `vecdb serve`: defaults, a TOML or JSON config file, `VECDB__*` env overrides.

Precedence, lowest first: the defaults below, the file given with `--config`, environment
variables named `VECDB__<SECTION>__<KEY>` (e.g. `VECDB__SERVER__PORT=7800`,
`VECDB__AUTH__READ_ONLY_KEYS=k1,k2`), then explicit command-line flags. Unknown sections or
keys are errors naming them, so a typo never silently falls back to a default. This module owns
parsing and validation only; `vecdb.server.app` acts on the result.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vecdb import config as caps
from vecdb.engine import settings as es
from vecdb.errors import InvalidArgument
from vecdb.server.auth import parse_key_entry
from vecdb.server.metrics import MAX_TENANT_LABELS, MIN_TENANT_LABELS
from vecdb.server.quotas import quotas_from_config

ENV_PREFIX = "VECDB__"
# [cluster] bounds (PARAMS.md): the router's per-shard deadline margin and default deadline.
MIN_DEADLINE_MARGIN_MS, MAX_DEADLINE_MARGIN_MS = 0, 10_000
MIN_DEFAULT_DEADLINE_S, MAX_DEFAULT_DEADLINE_S = 0.01, 3600.0
MAX_STREAMS = 4096  # limits.max_search_streams / max_upsert_streams (each holds a thread)
MIN_STREAM_IDLE, MAX_STREAM_IDLE = 0.1, 3600.0  # limits.*_stream_idle_seconds


@dataclass
class ServerSection:
    """Where to listen and what to serve."""

    data: str = caps.DEFAULT_DATA_DIR  # data directory of the embedded engine
    host: str = "127.0.0.1"  # bind address; 0.0.0.0 to listen on every interface
    port: int = caps.DEFAULT_PORT  # gRPC port; 0 picks a free one
    workers: int = 16  # handler threads of VectorDB calls (more calls queue, see limits)
    # Register grpc.reflection (grpcurl without the .proto). Off by default: it is a schema
    # dump, and its streams stay open; when on, it needs an API key if keys are configured
    # and runs on the limits.side_workers threads, never on VectorDB handler threads.
    reflection: bool = False
    grace_seconds: float = 10.0  # how long shutdown lets in-flight calls finish
    blas_threads: int = 1  # BLAS threads per call (the engine parallelises itself); 0: as is


@dataclass
class LimitsSection:
    """Guard-rails. A burst queues: `server.workers` calls run, up to `max_queued_rpcs` more
    wait for a thread, and only past that is a call refused (RESOURCE_EXHAUSTED with
    RetryInfo, counted in `vecdb_rejected_requests`, logged at most every 10 s). Health
    checks and reflection run on `side_workers` threads of their own, so they cannot starve
    VectorDB calls nor be starved by them. Calls without a valid key are refused before their
    body is read."""

    max_message_bytes: int = caps.DEFAULT_MAX_MESSAGE_BYTES  # per request and per response
    max_queued_rpcs: int = 1024  # calls waiting for a handler thread before refusals start
    side_workers: int = 4  # threads for health Watch and reflection streams (Check has 2 more)
    stream_window: int = 4  # unacknowledged batches a streaming upsert may have in flight
    # SearchStreams open at once (each holds a handler thread while open; capped at half of
    # server.workers); 0: refused, clients send single Search calls
    max_search_streams: int = 8
    search_stream_idle_seconds: float = 5.0  # a SearchStream without a request this long ends
    # UpsertStreams open at once (capped at a quarter of server.workers); past it, and for 0,
    # the SDK sends its batches as Upsert calls
    max_upsert_streams: int = 4
    # an UpsertStream waiting this long for a batch, all acknowledged, ends (the SDK goes on)
    upsert_stream_idle_seconds: float = 60.0


@dataclass
class MetricsSection:
    """Prometheus exposition on a side HTTP port (`/metrics`)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = caps.DEFAULT_METRICS_PORT  # 0 picks a free one
    tenant_labels: int = 100  # tenants with their own metric labels; the rest are "other"


@dataclass
class AuthSection:
    """API keys (docs/SECURITY.md). With no key configured the server is open (bind it to
    loopback). `keys` are `[[auth.keys]]` tables: `key`, `role` ("read" | "write" | "admin"),
    optional `tenants` and `collections` (empty: all) and `description`."""

    admin_key: str = ""  # may do everything
    read_only_keys: list[str] = field(default_factory=list)  # may only read
    keys: list[dict[str, Any]] = field(default_factory=list)  # keys with a role and a scope
    keys_file: str = ""  # runtime keys (hashed); "": <server.data>/api_keys.json


@dataclass
class QuotasSection:
    """Per-tenant quotas (vecdb.server.quotas; bounds in PARAMS.md); 0 = unlimited.
    `tenants` holds per-tenant overrides: `[quotas.tenants.acme] requests_per_second = 50`."""

    requests_per_second: float = 0.0  # token bucket refill per tenant
    burst: int = 0  # bucket size; 0: max(1, ceil(requests_per_second))
    max_concurrent_queries: int = 0  # searches running at once per tenant
    max_k: int = 0  # largest k a tenant's search may ask for
    max_vectors: int = 0  # stored at CreateTenant naming none: points a tenant may see
    max_bytes: int = 0  # ... and vector bytes it may own (the engine enforces both)
    max_tracked_tenants: int = 100_000  # tenants whose quota state is kept (LRU)
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)  # overrides by tenant


@dataclass
class TlsSection:
    """TLS: a server certificate, and client certificates too when `client_ca` is set (mTLS)."""

    cert: str = ""  # PEM certificate chain of the server
    key: str = ""  # PEM private key of the server
    client_ca: str = ""  # PEM CA bundle; when set, clients must present a certificate it signed


@dataclass
class LogSection:
    """Logging: JSON lines on stderr."""

    level: str = "INFO"
    json: bool = True


@dataclass
class EngineSection:
    """How writes reach the indexes: buffer caps, backpressure, the maintenance worker (the
    names, defaults and bounds of `vecdb.engine.settings`, explained in PARAMS.md)."""

    bulk_build_bytes: int = es.DEFAULT_BULK_BUILD_BYTES
    build_min_vectors: int = es.DEFAULT_BUILD_MIN_VECTORS
    drain_vectors: int = es.DEFAULT_DRAIN_VECTORS
    rebuild_max_bytes: int = es.DEFAULT_REBUILD_MAX_BYTES
    idle_seconds: float = es.DEFAULT_IDLE_SECONDS
    buffer_max_bytes: int = es.DEFAULT_BUFFER_MAX_BYTES
    stall_timeout: float = es.DEFAULT_STALL_TIMEOUT
    maintain_slice: float = es.DEFAULT_MAINTAIN_SLICE
    apply_batch: int = es.DEFAULT_APPLY_BATCH
    retry_seconds: float = es.DEFAULT_RETRY_SECONDS

    def settings(self) -> es.EngineSettings:
        return es.EngineSettings.parse(dataclasses.asdict(self))


ROLES = ("single", "shard", "router")


@dataclass
class ClusterSection:
    """Scale-out (issue 14, bounds in PARAMS.md): `role` "single" (one node), "shard" (a
    node that follows the etcd catalog) or "router" (no data; routes to the shards)."""

    role: str = "single"
    etcd: str = ""  # "host:port[,host:port...]" of the catalog; "" for none
    prefix: str = "/vecdb"  # key prefix of the catalog in etcd
    shards: list[str] = field(default_factory=list)  # router: the shard map (host:port each)
    shard_index: int = -1  # shard: its index; -1: the trailing -<n> of $HOSTNAME
    deadline_margin_ms: int = 50  # router: kept back from the client's deadline per shard call
    default_deadline_s: float = 10.0  # router: per-shard deadline when the client set none

    def validate(self) -> None:
        if self.role not in ROLES:
            raise InvalidArgument(f"cluster.role={self.role!r} is not one of {', '.join(ROLES)}",
                                  field="cluster.role")  # fmt: skip
        if not MIN_DEADLINE_MARGIN_MS <= self.deadline_margin_ms <= MAX_DEADLINE_MARGIN_MS:
            raise InvalidArgument(
                f"cluster.deadline_margin_ms={self.deadline_margin_ms} is out of range "
                f"[{MIN_DEADLINE_MARGIN_MS}, {MAX_DEADLINE_MARGIN_MS}]",
                field="cluster.deadline_margin_ms",
            )  # fmt: skip
        if not MIN_DEFAULT_DEADLINE_S <= self.default_deadline_s <= MAX_DEFAULT_DEADLINE_S:
            raise InvalidArgument(
                f"cluster.default_deadline_s={self.default_deadline_s} is out of range "
                f"[{MIN_DEFAULT_DEADLINE_S}, {MAX_DEFAULT_DEADLINE_S}]",
                field="cluster.default_deadline_s",
            )  # fmt: skip
        for i, addr in enumerate(self.shards):
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit():
                raise InvalidArgument(f"cluster.shards[{i}]={addr!r} is not host:port",
                                      field=f"cluster.shards[{i}]")  # fmt: skip
        if self.role == "router" and not self.shards and not self.etcd:
            raise InvalidArgument("cluster.role='router' needs cluster.shards or cluster.etcd",
                                  field="cluster.shards")  # fmt: skip
        if self.role == "shard" and not self.etcd:
            raise InvalidArgument("cluster.role='shard' needs cluster.etcd (the catalog)",
                                  field="cluster.etcd")  # fmt: skip


@dataclass
class ServerConfig:
    """The whole configuration of one server process."""

    server: ServerSection = field(default_factory=ServerSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    auth: AuthSection = field(default_factory=AuthSection)
    quotas: QuotasSection = field(default_factory=QuotasSection)
    tls: TlsSection = field(default_factory=TlsSection)
    log: LogSection = field(default_factory=LogSection)
    engine: EngineSection = field(default_factory=EngineSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)

    def validate(self) -> ServerConfig:
        """Check ranges and combinations; return self."""
        lim = self.limits
        if not caps.MIN_MAX_MESSAGE_BYTES <= lim.max_message_bytes <= caps.MAX_MAX_MESSAGE_BYTES:
            raise InvalidArgument(
                f"limits.max_message_bytes={lim.max_message_bytes} is out of range "
                f"[{caps.MIN_MAX_MESSAGE_BYTES}, {caps.MAX_MAX_MESSAGE_BYTES}]"
            )
        for name in ("max_queued_rpcs", "side_workers", "stream_window"):
            if getattr(lim, name) < (0 if name == "max_queued_rpcs" else 1):
                raise InvalidArgument(f"limits.{name} is out of range", field=f"limits.{name}")
        for kind in ("search", "upsert"):
            count = getattr(lim, f"max_{kind}_streams")
            if not 0 <= count <= MAX_STREAMS:
                raise InvalidArgument(f"limits.max_{kind}_streams={count} is out of range "
                                      f"[0, {MAX_STREAMS}]", field=f"limits.max_{kind}_streams")  # fmt: skip
            idle = getattr(lim, f"{kind}_stream_idle_seconds")
            if not MIN_STREAM_IDLE <= idle <= MAX_STREAM_IDLE:  # also rejects NaN
                raise InvalidArgument(f"limits.{kind}_stream_idle_seconds={idle} is out of "
                                      f"range [{MIN_STREAM_IDLE}, {MAX_STREAM_IDLE}]",
                                      field=f"limits.{kind}_stream_idle_seconds")  # fmt: skip
        if self.server.workers < 1:
            raise InvalidArgument("server.workers must be >= 1")
        if self.server.blas_threads < 0:
            raise InvalidArgument("server.blas_threads must be >= 0")
        for section, port in (("server", self.server.port), ("metrics", self.metrics.port)):
            if not 0 <= port <= 65535:
                raise InvalidArgument(f"{section}.port={port} is out of range [0, 65535]")
        if bool(self.tls.cert) != bool(self.tls.key):
            raise InvalidArgument("tls.cert and tls.key must be given together")
        if self.tls.client_ca and not self.tls.cert:
            raise InvalidArgument("tls.client_ca (mTLS) needs tls.cert and tls.key")
        self.cluster.validate()
        self.engine.settings()  # bounds of every engine setting, named in the error
        for i, entry in enumerate(self.auth.keys):
            parse_key_entry(entry, f"auth.keys[{i}]")
        quotas_from_config(dataclasses.asdict(self.quotas))
        if not MIN_TENANT_LABELS <= self.metrics.tenant_labels <= MAX_TENANT_LABELS:
            raise InvalidArgument(
                f"metrics.tenant_labels={self.metrics.tenant_labels} is out of range "
                f"[{MIN_TENANT_LABELS}, {MAX_TENANT_LABELS}]", field="metrics.tenant_labels",
            )  # fmt: skip
        if self.log.level.upper() not in logging.getLevelNamesMapping():
            raise InvalidArgument(
                f"log.level={self.log.level!r} is unknown (DEBUG, INFO, WARNING, ERROR, CRITICAL)"
            )
        return self

    def redacted(self) -> dict[str, Any]:
        """The effective configuration with secrets replaced, for logging at start-up."""
        out = dataclasses.asdict(self)
        if out["auth"]["admin_key"]:
            out["auth"]["admin_key"] = "***"
        out["auth"]["read_only_keys"] = ["***"] * len(out["auth"]["read_only_keys"])
        out["auth"]["keys"] = [{**k, "key": "***"} for k in out["auth"]["keys"]]
        return out


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> ServerConfig:
    """Defaults, then the file at `path`, then `VECDB__*` variables of `env`, then `overrides`."""
    cfg = ServerConfig()
    if path is not None:
        _apply(cfg, _read_file(Path(path)), source=str(path))
    env_values: dict[str, dict[str, Any]] = {}
    for name, value in (os.environ if env is None else env).items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2:
            raise InvalidArgument(f"environment variable {name}: expected VECDB__SECTION__KEY")
        env_values.setdefault(parts[0], {})[parts[1]] = value
    _apply(cfg, env_values, source="environment")
    if overrides:
        _apply(cfg, overrides, source="command line")
    return cfg.validate()


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"config file {str(path)!r}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"config file {str(path)!r} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"config file {str(path)!r} must hold a table of sections")
    return data


def _apply(cfg: ServerConfig, values: Mapping[str, Any], source: str) -> None:
    for section_name, section_values in values.items():
        section = getattr(cfg, section_name, None)
        if section is None or not dataclasses.is_dataclass(section):
            raise InvalidArgument(f"{source}: unknown config section {section_name!r}")
        if not isinstance(section_values, Mapping):
            raise InvalidArgument(f"{source}: section {section_name!r} must be a table")
        hints = typing.get_type_hints(type(section))
        for key, value in section_values.items():
            if key not in hints:
                raise InvalidArgument(f"{source}: unknown config key {section_name}.{key}")
            setattr(section, key, _coerce(value, hints[key], f"{section_name}.{key}", source))


def _coerce(value: Any, hint: Any, name: str, source: str) -> Any:
    """Convert a file value or an environment string to the declared type."""
    if typing.get_origin(hint) in (list, dict) and typing.get_args(hint)[-1] is not str:
        return _tables(value, hint, name, source)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if hint is int or hint is float:
            if isinstance(value, bool) or (hint is int and isinstance(value, float)
                                           and not value.is_integer()):  # fmt: skip
                raise ValueError(value)  # int(1.5) would be 1, silently
            return hint(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        if typing.get_origin(hint) is list or isinstance(hint, types.GenericAlias):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(value)
            return list(value)
    except (TypeError, ValueError):
        pass
    raise InvalidArgument(
        f"{source}: {name}={value!r} is not a valid {getattr(hint, '__name__', hint)}"
    )


def _tables(value: Any, hint: Any, name: str, source: str) -> Any:
    """A list of tables (`[[auth.keys]]`) or a table of tables (`[quotas.tenants.x]`); from the
    environment, as JSON text. Entries are checked by `ServerConfig.validate`; the value is
    never echoed (it may hold keys)."""
    want = "a list of tables" if typing.get_origin(hint) is list else "a table of tables"
    bad = InvalidArgument(f"{source}: {name} must be {want} (JSON text in the environment)")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise bad from None
    if typing.get_origin(hint) is list:
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise bad
        return [dict(v) for v in value]
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise bad
    return {str(k): dict(v) for k, v in value.items()}
