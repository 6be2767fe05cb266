"""Fixtures of the cluster tests: a real etcd on loopback, and catalogs on it.

`etcd_server` (session): one etcd process (`etcd_proc.EtcdProcess`) with `.endpoint`
("127.0.0.1:PORT"), `.stop()`, `.start()` (same data dir and ports), `.wipe()` (restart it
empty: every prefix is gone) and `.pid`. A test that stops it must start it again (use
`try/finally`). If etcd is not installed the fixture FAILS
(never skips) saying how to install it. `etcd_catalog`: a fresh `EtcdCatalog` on a prefix of
its own, closed after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from etcd_proc import INSTALL_HINT, EtcdProcess, etcd_binary

from vecdb.cluster.catalog import EtcdCatalog


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    if etcd_binary() is None:
        pytest.fail(f"the cluster tests need etcd, which is not installed: {INSTALL_HINT}")
    server = EtcdProcess(tmp_path_factory.mktemp("etcd") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix no other test uses."""
    return f"/vecdb-test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def etcd_catalog(etcd_server: EtcdProcess, etcd_prefix: str) -> Iterator[EtcdCatalog]:
    if not etcd_server.running:
        etcd_server.start()  # a test before stopped it and failed to restart it
    catalog = EtcdCatalog(etcd_server.endpoint, prefix=etcd_prefix, timeout=2.0)
    try:
        yield catalog
    finally:
        catalog.close()
