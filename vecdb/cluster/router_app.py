"""Assembles and runs one router: catalog, shard channels, gRPC server, health, metrics.

`RouterServer(config, catalog).start()` binds the gRPC port and serves `vecdb.v1.VectorDB`
through `RouterServicer`, behind the same `CallGuard` a node uses (request ids, API keys and
roles, admission queue, rich errors, metrics, JSON log lines), plus `grpc.health.v1.Health`
and (if enabled) reflection. Without a catalog given it opens one from `[cluster]`: etcd
when `cluster.etcd` is set, else an in-process `MemoryCatalog` (one router only: tests and
benchmarks); `cluster.shards`, when set, is written to the catalog as the shard map
(`init_shards`: the same list again is a no-op, a different one an error). Health is SERVING
while the catalog holds a shard map. A router has no data directory and no engine.
`serve_router(config)` runs one until SIGTERM or SIGINT. Owns process wiring only.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vecdb.cluster.router import RouterServicer
from vecdb.cluster.shards import ShardSet
from vecdb.errors import Unavailable
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import SERVICE_NAME, run_until_signal, setup_logging
from vecdb.server.app import _server_credentials as server_credentials
from vecdb.server.auth import KeyRing
from vecdb.server.auth_keys import KeyFile
from vecdb.server.config import ServerConfig
from vecdb.server.interceptors import AdmissionPool, CallGuard
from vecdb.server.metrics import ServerMetrics
from vecdb.server.quotas import quotas_from_config

if TYPE_CHECKING:
    from vecdb.cluster.catalog import Catalog, CatalogState

log = logging.getLogger("vecdb.router")


def open_catalog(config: ServerConfig) -> Catalog:
    """The catalog of `[cluster]`: etcd if configured, else one in this process."""
    from vecdb.cluster.catalog import EtcdCatalog, MemoryCatalog

    cl = config.cluster
    if cl.etcd:
        return EtcdCatalog(cl.etcd, prefix=cl.prefix)
    return MemoryCatalog(cl.shards)


class RouterServer:
    """One running router; see the module docstring for its lifecycle."""

    def __init__(self, config: ServerConfig, catalog: Catalog | None = None) -> None:
        self.config = config  # validated settings
        self._catalog = catalog  # opened in start() unless given
        self._owns_catalog = catalog is None  # close it at stop() only if we opened it
        self._grpc: grpc.Server | None = None
        self._health = health.HealthServicer()
        self._metrics: ServerMetrics | None = None
        self._guard: CallGuard | None = None
        self._shards: ShardSet | None = None
        self._unwatch: Any = None
        self.port = 0  # bound gRPC port, known after start()
        self.metrics_port = 0
        self._stopped = threading.Event()

    @property
    def catalog(self) -> Catalog:
        assert self._catalog is not None, "start() first"
        return self._catalog

    def start(self) -> RouterServer:
        """Open the catalog, bind ports, and begin serving."""
        cfg = self.config
        keys = KeyRing(cfg.auth.admin_key, cfg.auth.read_only_keys, cfg.auth.keys,
                       store=KeyFile(cfg.auth.keys_file) if cfg.auth.keys_file else None)  # fmt: skip
        if self._catalog is None:
            self._catalog = open_catalog(cfg)
        catalog = self._catalog
        if cfg.cluster.shards:
            try:
                catalog.init_shards(cfg.cluster.shards)
            except Unavailable as exc:  # etcd away: serve from what the cache will learn
                log.warning("shard map not written", extra={"error": exc.message})
        state = catalog.state()
        self._shards = ShardSet(
            state.shards, margin_ms=cfg.cluster.deadline_margin_ms,
            default_deadline_s=cfg.cluster.default_deadline_s,
            max_message_bytes=cfg.limits.max_message_bytes,
        )  # fmt: skip
        self._metrics = ServerMetrics(tenant_labels=cfg.metrics.tenant_labels)
        pool = AdmissionPool(cfg.server.workers)
        lim = cfg.limits
        quotas = quotas_from_config(dataclasses.asdict(cfg.quotas), self._metrics.tenants.throttle)
        self._guard = CallGuard(keys, self._metrics, pool, workers=cfg.server.workers,
                                max_queued=lim.max_queued_rpcs, side_workers=lim.side_workers,
                                quotas=quotas, search_streams=lim.max_search_streams,
                                search_stream_idle=lim.search_stream_idle_seconds,
                                upsert_streams=lim.max_upsert_streams,
                                upsert_stream_idle=lim.upsert_stream_idle_seconds,
                                max_message_bytes=lim.max_message_bytes)  # fmt: skip
        server = grpc.server(
            pool, interceptors=[self._guard],
            options=[("grpc.max_receive_message_length", lim.max_message_bytes),
                     ("grpc.max_send_message_length", lim.max_message_bytes),
                     ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=2 * (cfg.server.workers + lim.max_queued_rpcs) + 64,
        )  # fmt: skip
        servicer = RouterServicer(catalog, self._shards, lim.stream_window)
        pb_grpc.add_VectorDBServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if cfg.server.reflection:
            names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
        address = f"{cfg.server.host}:{cfg.server.port}"
        try:
            if cfg.tls.cert:  # clients to router: TLS / mTLS as a node; router to shards: plain
                self.port = server.add_secure_port(address, server_credentials(cfg))
            else:
                self.port = server.add_insecure_port(address)
            server.start()
            self._grpc = server
            if cfg.metrics.enabled:
                self.metrics_port = self._metrics.start_http(cfg.metrics.host, cfg.metrics.port)
        except (RuntimeError, OSError) as exc:
            server.stop(0)
            self._guard.close()
            raise Unavailable(f"cannot serve on {address}: {exc}") from None
        self._on_catalog(state)
        self._unwatch = catalog.watch(self._on_catalog)
        log.info("serving", extra={"address": f"{cfg.server.host}:{self.port}", "role": "router",
                                   "shards": list(state.shards), "auth": keys.enabled})  # fmt: skip
        return self

    def _on_catalog(self, state: CatalogState) -> None:
        """Follow the catalog: shard channels, and health (SERVING once shards are known)."""
        if self._shards is not None:
            self._shards.update(state.shards)
        status = health_pb2.HealthCheckResponse
        serving = status.SERVING if state.shards else status.NOT_SERVING
        if not self._stopped.is_set():
            for name in ("", SERVICE_NAME):
                self._health.set(name, serving)

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop: NOT_SERVING, refuse new calls, finish in-flight ones."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.server.grace_seconds if grace is None else grace
        self._health.enter_graceful_shutdown()
        if self._unwatch is not None:
            self._unwatch()
        drained = self._guard.drain(grace) if self._guard is not None else True
        if self._grpc is not None:
            self._grpc.stop(0 if not drained else min(grace, 1.0)).wait()
        if self._guard is not None:
            self._guard.close()
        if self._metrics is not None:
            self._metrics.stop_http()
        if self._shards is not None:
            self._shards.close()
        if self._catalog is not None and self._owns_catalog:
            self._catalog.close()
        log.info("stopped", extra={"role": "router"})

    def __enter__(self) -> RouterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)


def serve_router(config: ServerConfig) -> int:
    """Run a router in the foreground until SIGTERM/SIGINT, then shut down gracefully."""
    setup_logging(config.log.level, config.log.json)
    log.info("config", extra={"config": config.redacted()})
    server = RouterServer(config).start()
    return run_until_signal(server.stop)
