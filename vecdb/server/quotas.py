"""Per-tenant rate and concurrency quotas, checked by the server interceptor before a call
runs.

Each tenant has a token bucket (`requests_per_second`, refilled continuously, holding at most
`burst` tokens) charged one token per request (per message of a streamed upsert), a count of
its running queries (Search, SearchBatch, SearchDocuments) capped by `max_concurrent_queries`,
and an optional cap on `k`. Limits come from `[quotas]` (the default of every tenant) and
`[quotas.tenants.<name>]` (overrides); 0 means unlimited. A call acting for several tenants
(`tenants=[...]`) must fit every one of them and is charged to each; a refused call is charged
to none. A refusal is RESOURCE_EXHAUSTED naming the tenant and the limit, with RetryInfo when a
retry can succeed (the time until the next token; a short fixed hint for concurrency). Calls
naming no tenant (an unscoped key working on the whole collection) are not tenant-limited.
State is kept for at most `max_tracked_tenants` tenants, least recently used first out (a
forgotten tenant starts again with a full bucket), so a stream of made-up names cannot grow
memory. Vector and byte quotas are stored by the engine with each tenant and checked at write
time there; `max_vectors` and `max_bytes` here are only the values a CreateTenant naming none
stores (`stored`). Must not import the engine.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from vecdb.errors import InvalidArgument, ResourceExhausted, echo

# name: (default, min, max); 0 is "unlimited" for every limit.
DEFAULT_REQUESTS_PER_SECOND, MIN_REQUESTS_PER_SECOND, MAX_REQUESTS_PER_SECOND = 0.0, 0.0, 1e6
DEFAULT_BURST, MIN_BURST, MAX_BURST = 0, 0, 1_000_000
DEFAULT_MAX_CONCURRENT_QUERIES, MIN_MAX_CONCURRENT_QUERIES, MAX_MAX_CONCURRENT_QUERIES = (
    0,
    0,
    10_000,
)
DEFAULT_MAX_K, MIN_MAX_K, MAX_MAX_K = 0, 0, 16_384
# Defaults of the engine's stored quotas (the engine's bounds: `tenant_rules`).
DEFAULT_MAX_VECTORS, MIN_MAX_VECTORS, MAX_MAX_VECTORS = 0, 0, 1 << 40
DEFAULT_MAX_BYTES, MIN_MAX_BYTES, MAX_MAX_BYTES = 0, 0, 1 << 50
DEFAULT_MAX_TRACKED_TENANTS, MIN_MAX_TRACKED_TENANTS, MAX_MAX_TRACKED_TENANTS = (
    100_000, 100, 10_000_000)  # fmt: skip
CONCURRENCY_RETRY_AFTER = 0.05  # seconds suggested to a query refused for concurrency
QUERY_METHODS = frozenset({"Search", "SearchBatch", "SearchDocuments"})

_BOUNDS: dict[str, tuple[float, float]] = {
    "requests_per_second": (MIN_REQUESTS_PER_SECOND, MAX_REQUESTS_PER_SECOND),
    "burst": (MIN_BURST, MAX_BURST),
    "max_concurrent_queries": (MIN_MAX_CONCURRENT_QUERIES, MAX_MAX_CONCURRENT_QUERIES),
    "max_k": (MIN_MAX_K, MAX_MAX_K),
    "max_vectors": (MIN_MAX_VECTORS, MAX_MAX_VECTORS),
    "max_bytes": (MIN_MAX_BYTES, MAX_MAX_BYTES),
}


@dataclass(frozen=True)
class TenantLimits:
    """The limits of one tenant; 0 means unlimited."""

    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    burst: int = DEFAULT_BURST  # bucket size; 0: max(1, ceil(requests_per_second))
    max_concurrent_queries: int = DEFAULT_MAX_CONCURRENT_QUERIES
    max_k: int = DEFAULT_MAX_K
    max_vectors: int = DEFAULT_MAX_VECTORS  # stored at CreateTenant when it names none
    max_bytes: int = DEFAULT_MAX_BYTES  # (the engine enforces both; see the docstring)

    @property
    def bucket(self) -> float:
        return float(self.burst or max(1, math.ceil(self.requests_per_second)))

    @property
    def unlimited(self) -> bool:
        return not (self.requests_per_second or self.max_concurrent_queries or self.max_k)

    def merged(self, values: Mapping[str, Any], where: str) -> TenantLimits:
        """These limits with `values` (a config table) applied, each checked against its
        bounds."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in values.items():
            if key not in _BOUNDS:
                raise InvalidArgument(f"{where}: unknown quota {key!r} (one of "
                                      f"{', '.join(_BOUNDS)})", field=f"{where}.{key}")  # fmt: skip
            lo, hi = _BOUNDS[key]
            kind = float if key == "requests_per_second" else int
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    lo <= value <= hi) or (kind is int and value != int(value)):  # fmt: skip
                raise InvalidArgument(f"{where}.{key}={echo(value)} is out of range [{lo:g}, "
                                      f"{hi:g}]", field=f"{where}.{key}")  # fmt: skip
            out[key] = kind(value)
        return TenantLimits(**out)


class _State:
    """What the quotas remember of one tenant."""

    __slots__ = ("limits", "tokens", "stamp", "running")

    def __init__(self, limits: TenantLimits, now: float) -> None:
        self.limits = limits  # its effective limits
        self.tokens = limits.bucket  # tokens in the bucket at `stamp`
        self.stamp = now  # monotonic time of the last refill
        self.running = 0  # queries running now

    def refill(self, now: float) -> None:
        rate = self.limits.requests_per_second
        self.tokens = min(self.limits.bucket, self.tokens + (now - self.stamp) * rate)
        self.stamp = now


class Ticket:
    """A call's hold on its tenants' concurrency slots; `release()` once it ends."""

    __slots__ = ("_quotas", "_held")

    def __init__(self, quotas: Quotas | None, held: tuple[str, ...]) -> None:
        self._quotas, self._held = quotas, held

    def release(self) -> None:
        if self._quotas is not None and self._held:
            self._quotas._release(self._held)
        self._held = ()


NO_TICKET = Ticket(None, ())


class Quotas:
    """The quota state of one server. Thread-safe (one lock; every operation is O(tenants
    named by the call))."""

    def __init__(
        self,
        default: TenantLimits = TenantLimits(),
        per_tenant: Mapping[str, TenantLimits] | None = None,
        max_tracked: int = DEFAULT_MAX_TRACKED_TENANTS,
        on_throttle: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = default  # limits of tenants without an override
        self._per_tenant = dict(per_tenant or {})  # overrides by tenant name
        self._max_tracked = max_tracked  # tenants whose state is kept
        self._on_throttle = on_throttle  # (tenant, limit) of each refusal, for metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._states: OrderedDict[str, _State] = OrderedDict()  # least recently used first
        self.enabled = not default.unlimited or any(
            not t.unlimited for t in self._per_tenant.values())  # fmt: skip

    def limits(self, tenant: str) -> TenantLimits:
        return self._per_tenant.get(tenant, self._default)

    def stored(self, tenant: str) -> tuple[int, int]:
        """(max_vectors, max_bytes) a new tenant gets when its CreateTenant names none."""
        lim = self.limits(tenant)
        return lim.max_vectors, lim.max_bytes

    def admit_request(self, tenants: tuple[str, ...], method: str, request: Any) -> Ticket:
        """`admit` for a decoded request, reading its `k` only when a quota can apply (the
        per-call fast path: no quotas configured, or a call naming no tenant, costs nothing)."""
        if not self.enabled or not tenants:
            return NO_TICKET
        return self.admit(tenants, method, requested_k(request))

    def admit(self, tenants: Iterable[str], method: str, k: int | None = None) -> Ticket:
        """Charge one request to each tenant and hold a query slot if `method` is a query;
        raise ResourceExhausted (charging nothing) if any tenant is over a limit."""
        names = tuple(tenants)
        if not self.enabled or not names:
            return NO_TICKET
        query = method in QUERY_METHODS
        with self._lock:
            now = self._clock()
            states = [self._state(t, now) for t in names]
            # Pass 1: check every tenant before charging any.
            for name, st in zip(names, states, strict=True):
                lim = st.limits
                if k is not None and lim.max_k and k > lim.max_k:
                    self._refuse(name, "max_k", ResourceExhausted(
                        f"tenant {echo(name)} asked for k={k}, over its max_k quota of "
                        f"{lim.max_k}", field="k", reason="TENANT_K_QUOTA"))  # fmt: skip
                if lim.requests_per_second:
                    st.refill(now)
                    if st.tokens < 1.0:
                        wait = (1.0 - st.tokens) / lim.requests_per_second
                        self._refuse(name, "requests_per_second", ResourceExhausted(
                            f"tenant {echo(name)} over its {lim.requests_per_second:g} "
                            "requests/s quota", reason="TENANT_RATE_QUOTA",
                            retry_after=round(wait, 4)))  # fmt: skip
                if query and lim.max_concurrent_queries and (
                        st.running >= lim.max_concurrent_queries):  # fmt: skip
                    self._refuse(name, "max_concurrent_queries", ResourceExhausted(
                        f"tenant {echo(name)} over its {lim.max_concurrent_queries} concurrent "
                        "queries quota", reason="TENANT_CONCURRENCY_QUOTA",
                        retry_after=CONCURRENCY_RETRY_AFTER))  # fmt: skip
            # Pass 2: charge them all.
            for st in states:
                if st.limits.requests_per_second:
                    st.tokens -= 1.0
                if query:
                    st.running += 1
        return Ticket(self, names) if query else NO_TICKET

    def _state(self, tenant: str, now: float) -> _State:
        st = self._states.get(tenant)
        if st is None:
            st = self._states[tenant] = _State(self.limits(tenant), now)
            if len(self._states) > self._max_tracked:
                self._evict()
        else:
            self._states.move_to_end(tenant)
        return st

    def _evict(self) -> None:
        """Forget the least recently used tenant with no query running."""
        for name, st in self._states.items():
            if st.running == 0:
                del self._states[name]
                return

    def _refuse(self, tenant: str, limit: str, exc: ResourceExhausted) -> None:
        if self._on_throttle is not None:
            self._on_throttle(tenant, limit)
        raise exc

    def _release(self, tenants: tuple[str, ...]) -> None:
        with self._lock:
            for name in tenants:
                st = self._states.get(name)
                if st is not None and st.running > 0:
                    st.running -= 1

    def tracked(self) -> int:
        """Tenants whose state is kept now."""
        return len(self._states)


def quotas_from_config(
    values: Mapping[str, Any], on_throttle: Callable[[str, str], None] | None = None
) -> Quotas:
    """A `Quotas` from the `[quotas]` section (as a dict): defaults, `tenants` overrides and
    `max_tracked_tenants`; every value checked against its bounds."""
    values = dict(values)
    tenants = values.pop("tenants", {}) or {}
    tracked = values.pop("max_tracked_tenants", DEFAULT_MAX_TRACKED_TENANTS)
    if isinstance(tracked, bool) or not isinstance(tracked, int) or not (
            MIN_MAX_TRACKED_TENANTS <= tracked <= MAX_MAX_TRACKED_TENANTS):  # fmt: skip
        raise InvalidArgument(f"quotas.max_tracked_tenants={echo(tracked)} is out of range "
                              f"[{MIN_MAX_TRACKED_TENANTS}, {MAX_MAX_TRACKED_TENANTS}]",
                              field="quotas.max_tracked_tenants")  # fmt: skip
    default = TenantLimits().merged(values, "quotas")
    if not isinstance(tenants, Mapping):
        raise InvalidArgument("quotas.tenants must be a table of tables", field="quotas.tenants")
    per: dict[str, TenantLimits] = {}
    for name, table in tenants.items():
        if not isinstance(table, Mapping):
            raise InvalidArgument(f"quotas.tenants.{name} must be a table",
                                  field=f"quotas.tenants.{name}")  # fmt: skip
        per[str(name)] = default.merged(table, f"quotas.tenants.{name}")
    return Quotas(default, per, tracked, on_throttle)


def requested_k(msg: Any) -> int | None:
    """The `k` a search request asks for (`options.k` or a top-level `k`), else None."""
    fields = getattr(getattr(msg, "DESCRIPTOR", None), "fields_by_name", {})
    if "options" in fields and fields["options"].message_type is not None:
        return requested_k(msg.options)
    if "k" in fields:
        return int(msg.k)
    return None
