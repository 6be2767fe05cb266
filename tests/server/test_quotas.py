"""Per-tenant quotas: the token bucket and concurrency caps on a fake clock, their bounds, and
over a real gRPC server (the stand-in of `auth_helpers` behind the real CallGuard):
RESOURCE_EXHAUSTED naming the tenant and the limit with RetryInfo, other tenants untouched,
recovery after the advertised wait, and throttles on /metrics; plus the real server's config.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from auth_helpers import StandInServer, error_of
from wire_helpers import DIM

import vecdb
from vecdb.server.app import VecdbServer
from vecdb.server.auth import KeyRing
from vecdb.server.config import load_config
from vecdb.server.quotas import Quotas, TenantLimits, quotas_from_config

ADMIN, ACME = "quota-admin-key-0001", "quota-acme-key-00001"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refuses_past_the_rate_and_refills() -> None:
    """5 requests/s with burst 5: five pass, the sixth is refused with the wait until the next
    token, and after that wait one more passes."""
    clock = Clock()
    q = Quotas(TenantLimits(requests_per_second=5), clock=clock)
    for _ in range(5):
        q.admit(["acme"], "Get")
    err = error_of(lambda: q.admit(["acme"], "Get"))
    assert type(err) is vecdb.ResourceExhausted and err.reason == "TENANT_RATE_QUOTA"
    assert err.message == "tenant 'acme' over its 5 requests/s quota"
    assert err.retry_after == pytest.approx(0.2)
    q.admit(["globex"], "Get")  # another tenant has its own bucket
    clock.now += 0.2
    q.admit(["acme"], "Get")
    with pytest.raises(vecdb.ResourceExhausted):
        q.admit(["acme"], "Get")


def test_a_call_for_several_tenants_is_charged_to_all_or_none() -> None:
    """With globex exhausted, a union call over acme + globex is refused and acme keeps its
    token."""
    clock = Clock()
    q = Quotas(TenantLimits(requests_per_second=1), clock=clock)
    q.admit(["globex"], "Search")
    err = error_of(lambda: q.admit(["acme", "globex"], "Search"))
    assert "tenant 'globex'" in err.message
    q.admit(["acme"], "Search")  # its single token was not spent by the refused call


def test_concurrency_cap_holds_until_release_and_k_cap() -> None:
    """max_concurrent_queries counts running searches (not other calls); max_k caps k."""
    q = Quotas(TenantLimits(max_concurrent_queries=2, max_k=10))
    held = [q.admit(["acme"], "Search"), q.admit(["acme"], "SearchBatch")]
    q.admit(["acme"], "Get")  # not a query: no slot
    err = error_of(lambda: q.admit(["acme"], "Search"))
    assert (err.reason, err.message) == (
        "TENANT_CONCURRENCY_QUOTA",
        "tenant 'acme' over its 2 concurrent queries quota",
    )
    assert err.retry_after is not None and err.retry_after > 0
    held[0].release()
    held[0].release()  # releasing twice frees one slot only
    held.append(q.admit(["acme"], "Search"))
    with pytest.raises(vecdb.ResourceExhausted):
        q.admit(["acme"], "Search")
    err = error_of(lambda: q.admit(["globex"], "Search", k=11))
    assert (err.reason, err.field, err.retry_after) == ("TENANT_K_QUOTA", "k", None)
    assert err.message == "tenant 'globex' asked for k=11, over its max_k quota of 10"
    q.admit(["globex"], "Search", k=10).release()


def test_per_tenant_overrides_bounds_and_bounded_state() -> None:
    """Overrides inherit the defaults; values out of bounds are errors naming them; state is
    kept for at most max_tracked_tenants tenants."""
    q = quotas_from_config({"requests_per_second": 2.0, "max_tracked_tenants": 100,
                            "tenants": {"big": {"max_k": 50}}})  # fmt: skip
    assert q.limits("big") == TenantLimits(requests_per_second=2.0, max_k=50)
    assert q.limits("small") == TenantLimits(requests_per_second=2.0)
    for i in range(500):
        q.admit([f"t{i}"], "Get")
    assert q.tracked() == 100
    assert not quotas_from_config({}).enabled
    for values, field in (
        ({"requests_per_second": -1}, "quotas.requests_per_second"),
        ({"burst": 1.5}, "quotas.burst"),
        ({"max_k": 20000}, "quotas.max_k"),
        ({"max_tracked_tenants": 5}, "quotas.max_tracked_tenants"),
        ({"tenants": {"a": {"qps": 1}}}, "quotas.tenants.a.qps"),
        ({"tenants": {"a": {"max_concurrent_queries": True}}},
         "quotas.tenants.a.max_concurrent_queries"),
    ):  # fmt: skip
        err = error_of(lambda v=values: quotas_from_config(v))
        assert type(err) is vecdb.InvalidArgument and err.field == field


def test_rate_quota_over_the_wire_with_retry_info_and_recovery() -> None:
    """A tenant key past its rate gets RESOURCE_EXHAUSTED with RetryInfo; another tenant is
    served meanwhile; after the advertised wait the tenant is served again; the throttle is
    counted on /metrics."""
    q = quotas_from_config({"tenants": {"acme": {"requests_per_second": 4}}})
    keys = KeyRing(admin_key=ADMIN, keys=[{"key": ACME, "role": "read", "tenants": ["acme"]}])
    srv = StandInServer(keys, q)
    try:
        for _ in range(4):
            srv.call("Search", ACME, collection="c")
        err = error_of(lambda: srv.call("Search", ACME, collection="c"))
        assert type(err) is vecdb.ResourceExhausted
        assert (err.reason, err.message) == ("TENANT_RATE_QUOTA",
                                             "tenant 'acme' over its 4 requests/s quota")  # fmt: skip
        assert err.retry_after is not None and 0 < err.retry_after <= 0.25
        for _ in range(10):  # globex has no limit; the admin naming it is not throttled
            srv.call("Search", ADMIN, collection="c", tenant="globex")
        time.sleep(err.retry_after + 0.01)
        assert srv.call("Search", ACME, collection="c").tenant == "acme"
        port = srv.metrics.start_http("127.0.0.1", 0)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert ('vecdb_tenant_throttled_total{limit="requests_per_second",tenant="acme"} 1.0'
                in body.decode())  # fmt: skip
        assert ('vecdb_tenant_requests_total{code="RESOURCE_EXHAUSTED",method="Search",'
                'tenant="acme"} 1.0') in body.decode()  # fmt: skip
    finally:
        srv.metrics.stop_http()
        srv.close()


def test_concurrency_quota_over_the_wire() -> None:
    """With max_concurrent_queries=1, a second search while one runs is refused; the running
    search is unaffected and the next one after it passes."""
    q = quotas_from_config({"max_concurrent_queries": 1})
    srv = StandInServer(KeyRing(admin_key=ADMIN), q)
    try:
        started = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(lambda: (started.set(),
                                        srv.call("Search", ADMIN, collection="c", tenant="acme",
                                                 options={"sleep": 0.6})))  # fmt: skip
            started.wait(5)
            deadline = time.monotonic() + 5
            while srv.impl.running == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            err = error_of(lambda: srv.call("Search", ADMIN, collection="c", tenant="acme"))
            assert err.reason == "TENANT_CONCURRENCY_QUOTA" and err.retry_after is not None
            srv.call("Search", ADMIN, collection="c", tenant="globex")  # its own slot
            assert slow.result()[1].tenant == "acme"
        srv.call("Search", ADMIN, collection="c", tenant="acme")
        get = srv.metrics.registry.get_sample_value
        assert get("vecdb_tenant_throttled_total",
                   {"tenant": "acme", "limit": "max_concurrent_queries"}) == 1  # fmt: skip
    finally:
        srv.close()


def test_real_server_wires_quotas_from_config(start_server: Callable[..., VecdbServer]) -> None:
    """`[quotas]` reaches the real server's guard with its throttle metric; calls naming no
    tenant (whole-collection calls of an unscoped key) are not tenant-limited."""
    srv = start_server(quotas={"requests_per_second": 1.0, "burst": 1,
                               "tenants": {"acme": {"max_k": 3}}})  # fmt: skip
    with vecdb.connect(f"127.0.0.1:{srv.port}") as c:
        c.create_collection("base", DIM, "l2", index="flat")
        c.upsert("base", [1], np.ones((1, DIM)))
        for _ in range(5):
            assert c.count("base") == 1
    quotas = srv._guard._quotas  # type: ignore[union-attr]
    assert quotas.limits("acme") == TenantLimits(requests_per_second=1.0, burst=1, max_k=3)
    with pytest.raises(vecdb.ResourceExhausted):
        quotas.admit(["acme"], "Search", k=4)
    get = srv._metrics.registry.get_sample_value  # type: ignore[union-attr]
    assert get("vecdb_tenant_throttled_total", {"tenant": "acme", "limit": "max_k"}) == 1
    cfg = load_config(env={"VECDB__QUOTAS__TENANTS": '{"a": {"max_k": 3}}'})
    assert cfg.quotas.tenants == {"a": {"max_k": 3}}
