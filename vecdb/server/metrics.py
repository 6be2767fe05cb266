"""Prometheus metrics of one server: per-RPC counts, errors by status code, latency
histograms, in-flight calls, vectors written, collection sizes read at scrape time, and per
tenant: requests by method and code, a latency histogram (QPS and p99 come from these),
quota refusals by limit, and bytes read when a response reports them (`TenantMetrics`).

Each server owns its own `CollectorRegistry`, so several servers in one process (tests) do not
collide on metric names; `start_http` exposes it on the side port (`/metrics`, default 7701).
Collection sizes come from a callback the app passes in, so this module never touches the
engine and a scrape never holds a lock longer than `list_collections` does.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("vecdb.server")

# Tenants that get their own label value; the rest share OTHER_TENANT (bounded cardinality).
DEFAULT_TENANT_LABELS, MIN_TENANT_LABELS, MAX_TENANT_LABELS = 100, 1, 10_000
OTHER_TENANT = "(other)"  # parentheses: never a valid tenant name

# Latency buckets from 100 microseconds to 60 s: search calls sit at the low end, optimize high.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class _CollectionSizes(Collector):
    """Reads `(name, count)` pairs when Prometheus scrapes."""

    def __init__(self, sizes: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._sizes = sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "vecdb_collection_vectors", "Live vectors per collection", labels=["collection"]
        )
        try:
            for name, count in self._sizes():
                family.add_metric([name], float(count))
        except Exception:  # a scrape during shutdown must not crash the exporter
            log.debug("collection sizes unavailable", exc_info=True)
        yield family


_STATES = ("ready", "idle", "building", "indexing", "maintaining", "error")


class _IndexStatus(Collector):
    """Reads each collection's index and write-buffer numbers when Prometheus scrapes."""

    def __init__(self, status: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        label = ["collection"]
        gauges = {
            "indexed": GaugeMetricFamily(
                "vecdb_collection_indexed_vectors", "Vectors inside the index", labels=label
            ),
            "buffered": GaugeMetricFamily(
                "vecdb_collection_buffered_vectors",
                "Vectors in the exact write buffer, not yet indexed",
                labels=label,
            ),
            "buffer_bytes": GaugeMetricFamily(
                "vecdb_collection_buffer_bytes", "Bytes of buffered vectors", labels=label
            ),
            "progress": GaugeMetricFamily(
                "vecdb_collection_index_progress",
                "Fraction done of the running index job (1 when none runs)",
                labels=label,
            ),
            "last_build_seconds": GaugeMetricFamily(
                "vecdb_collection_last_build_seconds",
                "Duration of the last bulk index build",
                labels=label,
            ),
        }
        state = GaugeMetricFamily(
            "vecdb_collection_index_state",
            "1 for the collection's current index state, 0 for the others",
            labels=["collection", "state"],
        )
        counters = {
            "stalls": CounterMetricFamily(
                "vecdb_write_stalls", "Writes that waited for room in the buffer", labels=label
            ),
            "stall_seconds": CounterMetricFamily(
                "vecdb_write_stall_seconds",
                "Seconds writes spent waiting for room in the buffer",
                labels=label,
            ),
            "rejected": CounterMetricFamily(
                "vecdb_write_rejected",
                "Writes refused after waiting the whole stall timeout",
                labels=label,
            ),
        }
        try:
            for name, st in self._status().items():
                for key, family in gauges.items():
                    if st.get(key) is not None:
                        family.add_metric([name], float(st[key]))
                for s in _STATES:
                    state.add_metric([name, s], 1.0 if st.get("state") == s else 0.0)
                for key, counter in counters.items():
                    counter.add_metric([name], float(st.get(key, 0)))
        except Exception:  # a scrape during shutdown must not crash the exporter
            log.debug("index status unavailable", exc_info=True)
        yield from gauges.values()
        yield state
        yield from counters.values()


class TenantMetrics:
    """Per-tenant series. The first `max_labels` tenants with a successful or throttled call
    get their own label value for the life of the process; later ones, and tenants seen only
    in failed calls (a mistyped or made-up name), are counted under OTHER_TENANT, so a stream
    of tenant names cannot grow the exposition without bound."""

    def __init__(self, registry: CollectorRegistry, max_labels: int) -> None:
        self.requests = Counter(
            "vecdb_tenant_requests", "RPCs acting for a tenant, by tenant, method and code",
            ["tenant", "method", "code"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "vecdb_tenant_request_seconds", "Handling time of RPCs acting for a tenant",
            ["tenant"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.throttled = Counter(
            "vecdb_tenant_throttled", "Calls refused by a tenant quota, by tenant and limit",
            ["tenant", "limit"], registry=registry,
        )  # fmt: skip
        self.bytes_read = Counter(
            "vecdb_tenant_bytes_read", "Bytes the engine read answering a tenant's queries",
            ["tenant"], registry=registry,
        )  # fmt: skip
        self._max = max_labels  # distinct tenant label values besides OTHER_TENANT
        self._named: set[str] = set()  # tenants with their own label value
        self._lock = threading.Lock()

    def label(self, tenant: str, claim: bool = True) -> str:
        """The label value `tenant` is counted under; `claim`: give it its own if room is
        left."""
        if tenant in self._named:
            return tenant
        if not claim:
            return OTHER_TENANT
        with self._lock:
            if len(self._named) < self._max:
                self._named.add(tenant)
                return tenant
        return OTHER_TENANT

    def observe(self, tenants: Iterable[str], method: str, code: str, seconds: float) -> None:
        """One finished call, counted for each tenant it acted for."""
        for tenant in tenants:
            label = self.label(tenant, claim=code == "OK")
            self.requests.labels(label, method, code).inc()
            self.latency.labels(label).observe(seconds)

    def throttle(self, tenant: str, limit: str) -> None:
        """One call refused by `tenant`'s `limit` quota."""
        self.throttled.labels(self.label(tenant), limit).inc()

    def read(self, tenants: Iterable[str], nbytes: int) -> None:
        """`nbytes` read for a call acting for `tenants` (each is charged all of it)."""
        if nbytes > 0:
            for tenant in tenants:
                self.bytes_read.labels(self.label(tenant)).inc(nbytes)


class ServerMetrics:
    """The metric objects of one server and its HTTP exporter."""

    def __init__(
        self,
        sizes: Callable[[], Iterable[tuple[str, int]]] | None = None,
        index_status: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
        tenant_labels: int = DEFAULT_TENANT_LABELS,
    ) -> None:
        self.registry = CollectorRegistry()
        self.tenants = TenantMetrics(self.registry, tenant_labels)
        self.requests = Counter(
            "vecdb_requests",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.errors = Counter(
            "vecdb_request_errors",
            "RPCs that ended with a status other than OK, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "vecdb_request_seconds",
            "RPC handling time in seconds, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "vecdb_inflight_requests", "RPCs being handled now", registry=self.registry
        )
        self.vectors_written = Counter(
            "vecdb_upserted_vectors", "Vectors acknowledged by Upsert and UpsertStream",
            registry=self.registry,
        )  # fmt: skip
        self.rejected = Counter(
            "vecdb_rejected_requests",
            "Calls refused before running because the server was busy, by reason",
            ["reason"],
            registry=self.registry,
        )
        if sizes is not None:
            self.registry.register(_CollectionSizes(sizes))
        if index_status is not None:
            self.registry.register(_IndexStatus(index_status))
        self._http: Any = None
        self._thread: threading.Thread | None = None
        # (method, code) -> its requests child, errors child (None for OK), latency child
        self._series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        """Record one finished call."""
        series = self._series.get((method, code))
        if series is None:  # first call of this (method, code): look the children up once
            errors = self.errors.labels(method, code) if code != "OK" else None
            series = (self.requests.labels(method, code), errors, self.latency.labels(method))
            self._series[(method, code)] = series
        requests, errors, latency = series
        requests.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)

    def start_http(self, host: str, port: int) -> int:
        """Serve `/metrics` on `host:port` (0 = a free port); return the bound port."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def stop_http(self) -> None:
        """Stop the exporter, if started."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def bytes_read_of(response: Any) -> int:
    """The bytes a response says the engine read (`stats.bytes_read`, a top-level
    `bytes_read`, or the "bytes_read" of a JSON `stats` string, as documents answer), 0 when
    it does not say: search statistics are optional on the wire."""
    fields = getattr(getattr(response, "DESCRIPTOR", None), "fields_by_name", {})
    holder = response
    if "stats" in fields and fields["stats"].message_type is not None:
        holder = response.stats
        fields = holder.DESCRIPTOR.fields_by_name
    elif "stats" in fields and isinstance(response.stats, str):
        try:
            stats = json.loads(response.stats) if response.stats else {}
            return int(stats.get("bytes_read", 0)) if isinstance(stats, dict) else 0
        except (ValueError, TypeError):
            return 0
    if "bytes_read" in fields:
        return int(holder.bytes_read)
    return 0
