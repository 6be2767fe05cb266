"""Assembles and runs one vecdb server: engine, gRPC server, health, reflection, metrics, logs.

`VecdbServer(config).start()` opens the database, binds the gRPC port (plaintext, TLS or
mTLS), registers `vecdb.v1.VectorDB`, `grpc.health.v1.Health` and (if enabled) reflection,
starts the Prometheus exporter, and marks health SERVING. Health also carries the storage's
write state under `WRITE_SERVICE`: NOT_SERVING while writes are refused (disk full, or
read-only after an I/O error; reads go on and "" stays SERVING), checked every
`STORAGE_POLL_SECONDS`, which also lets a store whose disk has room again resume writes
without a restart. `stop()` is the graceful path: health goes
NOT_SERVING, new calls get UNAVAILABLE, in-flight calls get `grace_seconds` to finish, then the
database is closed. `serve(config)` runs a server until SIGTERM or SIGINT; tests use the class
directly with `port=0`. Owns process wiring only; request handling is in servicer/interceptors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vecdb.errors import InvalidArgument, Unavailable
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.auth import KeyRing
from vecdb.server.auth_keys import FILE_NAME as KEYS_FILE_NAME
from vecdb.server.auth_keys import KeyFile
from vecdb.server.config import ServerConfig
from vecdb.server.interceptors import AdmissionPool, CallGuard
from vecdb.server.metrics import ServerMetrics
from vecdb.server.quotas import quotas_from_config
from vecdb.server.servicer import VectorDBServicer

if TYPE_CHECKING:
    from vecdb.engine import Database

log = logging.getLogger("vecdb.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VectorDB"].full_name  # "vecdb.v1.VectorDB"
WRITE_SERVICE = SERVICE_NAME + ".writes"  # health of writes alone (disk full: NOT_SERVING)
STORAGE_POLL_SECONDS = 1.0


class VecdbServer:
    """One running server; see the module docstring for its lifecycle."""

    def __init__(
        self, config: ServerConfig, db: Database | None = None,
        wrap: Callable[[VectorDBServicer], Any] | None = None,
    ) -> None:  # fmt: skip
        self.config = config  # validated settings
        self._wrap = wrap  # a shard's route check around the servicer (vecdb.cluster)
        self._db = db  # opened in start() unless given
        self._owns_db = db is None  # close it at stop() only if we opened it
        self._grpc: grpc.Server | None = None
        self._health = health.HealthServicer()
        self._metrics: ServerMetrics | None = None
        self._guard: CallGuard | None = None
        self.port = 0  # bound gRPC port, known after start()
        self.metrics_port = 0  # bound metrics port (0 if disabled)
        self._stopped = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> VecdbServer:
        """Open the engine, bind ports, and begin serving."""
        cfg = self.config
        # Keys first: an unreadable key file stops the start before the database opens.
        keys = KeyRing(cfg.auth.admin_key, cfg.auth.read_only_keys, cfg.auth.keys,
                       store=_key_file(cfg))  # fmt: skip
        if self._db is None:
            from vecdb.engine import Database

            self._db = Database(cfg.server.data, settings=cfg.engine.settings())
        db = self._db
        self._metrics = ServerMetrics(
            sizes=lambda: [(c.name, c.count) for c in db.list_collections()],
            index_status=lambda: db.summaries(), tenant_labels=cfg.metrics.tenant_labels,
        )  # fmt: skip
        pool = AdmissionPool(cfg.server.workers)
        lim = cfg.limits
        quotas = quotas_from_config(dataclasses.asdict(cfg.quotas), self._metrics.tenants.throttle)
        self._guard = CallGuard(
            keys, self._metrics, pool, workers=cfg.server.workers,
            max_queued=lim.max_queued_rpcs, side_workers=lim.side_workers, quotas=quotas,
            search_streams=lim.max_search_streams,
            search_stream_idle=lim.search_stream_idle_seconds,
            upsert_streams=lim.max_upsert_streams, upsert_stream_idle=lim.upsert_stream_idle_seconds,
            max_message_bytes=lim.max_message_bytes,
        )  # fmt: skip
        server = grpc.server(
            pool,
            interceptors=[self._guard],
            options=[
                ("grpc.max_receive_message_length", lim.max_message_bytes),
                ("grpc.max_send_message_length", lim.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            # Only a safety net: the guard refuses with details long before (see interceptors).
            maximum_concurrent_rpcs=2 * (cfg.server.workers + lim.max_queued_rpcs) + 64,
        )
        servicer = VectorDBServicer(db, self._metrics, lim.stream_window, lim.max_message_bytes)
        servicer.attach_keys(keys)
        servicer.attach_quotas(quotas)
        served = servicer if self._wrap is None else self._wrap(servicer)
        pb_grpc.add_VectorDBServicer_to_server(served, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if cfg.server.reflection:
            names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
        address = f"{cfg.server.host}:{cfg.server.port}"
        try:
            if cfg.tls.cert:
                self.port = server.add_secure_port(address, _server_credentials(cfg))
            else:
                self.port = server.add_insecure_port(address)
            server.start()
            self._grpc = server
            if cfg.metrics.enabled:
                self.metrics_port = self._metrics.start_http(cfg.metrics.host, cfg.metrics.port)
        except (RuntimeError, OSError) as exc:  # port taken, bad address, unreadable cert
            server.stop(0)
            self._guard.close()
            if self._owns_db:
                db.close()
            if isinstance(exc, TLSFilesError):
                raise InvalidArgument(str(exc), field="tls") from None
            ports = f" (metrics port {cfg.metrics.port})" if cfg.metrics.enabled else ""
            raise Unavailable(f"cannot serve on {address}{ports}: {exc}") from None
        for name in ("", SERVICE_NAME, WRITE_SERVICE):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        threading.Thread(
            target=self._watch_storage, name="vecdb-storage-health", daemon=True
        ).start()
        log.info(
            "serving",
            extra={"address": f"{cfg.server.host}:{self.port}", "tls": bool(cfg.tls.cert),
                   "mtls": bool(cfg.tls.client_ca), "metrics_port": self.metrics_port,
                   "auth": keys.enabled, "quotas": quotas.enabled},
        )  # fmt: skip
        return self

    def _watch_storage(self) -> None:
        """Mirror the store's write state into health; resume writes once space is back."""
        db, serving = self._db, True
        while db is not None and not self._stopped.wait(STORAGE_POLL_SECONDS):
            try:
                db.kv.try_resume()
                problem = db.kv.write_problem()
            except Exception as exc:  # the watcher must outlive any storage hiccup
                problem = str(exc)
            if bool(problem) == serving and not self._stopped.is_set():
                serving = not problem
                status = health_pb2.HealthCheckResponse
                self._health.set(WRITE_SERVICE, status.SERVING if serving else status.NOT_SERVING)
                if serving:
                    log.warning("writes accepted again", extra={"service": WRITE_SERVICE})
                else:
                    log.error("writes refused", extra={"reason": problem})

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop: NOT_SERVING, refuse new calls, finish in-flight ones, close the DB."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.server.grace_seconds if grace is None else grace
        t0 = time.perf_counter()
        self._health.enter_graceful_shutdown()
        # Pass 1: refuse new calls with UNAVAILABLE (retryable) and let running ones finish.
        drained = self._guard.drain(grace) if self._guard is not None else True
        # Pass 2: stop the gRPC server; whatever still runs after the grace is cancelled.
        if self._grpc is not None:
            self._grpc.stop(0 if not drained else min(grace, 1.0)).wait()
        if self._guard is not None:
            self._guard.close()
        if self._metrics is not None:
            self._metrics.stop_http()
        if self._db is not None and self._owns_db:
            try:
                self._db.close()
            except Exception as exc:  # a full disk must not turn a clean stop into a crash
                log.error("closing the database failed", extra={"error": str(exc)})
        log.info("stopped", extra={"ms": round((time.perf_counter() - t0) * 1000, 1)})

    def wait(self) -> None:
        """Block until the server has stopped."""
        self._stopped.wait()
        if self._grpc is not None:
            self._grpc.wait_for_termination()

    def __enter__(self) -> VecdbServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)


def _key_file(cfg: ServerConfig) -> KeyFile | None:
    """Where runtime API keys persist: `auth.keys_file`, else next to the data (none for an
    in-memory database)."""
    if cfg.auth.keys_file:
        return KeyFile(cfg.auth.keys_file)
    if cfg.server.data in ("", ":memory:"):
        return None
    return KeyFile(Path(cfg.server.data) / KEYS_FILE_NAME)


class TLSFilesError(OSError):
    """The server's TLS files cannot be used (named in the message)."""


def _server_credentials(cfg: ServerConfig) -> grpc.ServerCredentials:
    """The server's TLS credentials, its files checked first with the standard library: grpc
    reports a key that does not match its certificate, or a file that is no PEM, as
    "Failed to bind to address", which sent operators looking at the port."""
    tls = cfg.tls
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(tls.cert, tls.key)
    except (ssl.SSLError, OSError) as exc:
        raise TLSFilesError(f"tls.cert {tls.cert} / tls.key {tls.key} cannot be used: "
                            f"{getattr(exc, 'reason', None) or exc}") from None  # fmt: skip
    if tls.client_ca:
        try:
            check.load_verify_locations(tls.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise TLSFilesError(f"tls.client_ca {tls.client_ca} cannot be used: "
                                f"{getattr(exc, 'reason', None) or exc}") from None  # fmt: skip
    key = Path(tls.key).read_bytes()
    cert = Path(tls.cert).read_bytes()
    client_ca = Path(tls.client_ca).read_bytes() if tls.client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


# -- logging --------------------------------------------------------------------------------

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STD_ATTRS})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO", as_json: bool = True) -> None:
    """Route the `vecdb` loggers to stderr, as JSON lines unless `as_json` is false."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    root = logging.getLogger("vecdb")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


_blas_limit: list[Any] = []  # keeps the process-wide BLAS thread limit alive


def pin_blas_threads(threads: int) -> None:
    """Set the BLAS thread count once, from the main thread, for the whole process.

    The engine's kernels parallelise with their own threads and hold BLAS to one thread per
    call; that per-call switch is cheap on the main thread but costs ~1 ms a call on a
    handler thread with OpenBLAS (measured: 2.5x slower exact search). Pinning it at start-up
    makes every handler thread as fast as the main thread.
    """
    if threads > 0 and not _blas_limit:
        from threadpoolctl import threadpool_limits

        _blas_limit.append(threadpool_limits(limits=threads, user_api="blas"))


def serve(config: ServerConfig) -> int:
    """Run a server in the foreground until SIGTERM/SIGINT, then shut down gracefully."""
    setup_logging(config.log.level, config.log.json)
    log.info("config", extra={"config": config.redacted()})
    pin_blas_threads(config.server.blas_threads)
    server = VecdbServer(config).start()
    return run_until_signal(server.stop)


def run_until_signal(stop: Callable[[], None]) -> int:
    """Wait in the foreground until SIGTERM or SIGINT, then call `stop` (the graceful
    shutdown of whatever was started: a node, a router, a shard and its sync) and restore
    the previous signal handlers; 0 for the process's exit code."""
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal received, draining", extra={"signal": signal.Signals(signum).name})
        stop_requested.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop_requested.wait(0.5):
            pass
    finally:
        stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
