"""Fixtures of the SDK test suite: one `client` per mode, so every test runs in every mode.

The tests under `tests/client/` use only the public SDK (`vecdb.connect`, `Client` methods,
`vecdb.errors`, `vecdb.types`), never the engine, so that the same test holds embedded
("local") and over gRPC ("remote", added with the server). To add a mode, append it to
`MODES` and teach `make_client` to build it; nothing else changes.

Tests that take the `index` fixture also run once per `IndexCase`: the flat index, and the
default SPANN index in both of its states (points still in the exact write buffer, and built
by `optimize()`), with float32 postings and search params that read every posting, so that
their results must still be exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from index_cases import INDEX_CASES, IndexCase

import vecdb

MODES = ["local", "remote"]


def make_client(mode: str, tmp_path: Path) -> vecdb.Client:
    """A fresh client over an empty database that lives under `tmp_path`."""
    if mode == "local":
        return vecdb.connect(str(tmp_path / "db"))
    if mode == "remote":  # a real gRPC server on 127.0.0.1:0, stopped when the client closes
        from vecdb.server.app import VecdbServer
        from vecdb.server.config import load_config

        cfg = load_config(env={}, overrides={
            "server": {"data": str(tmp_path / "db"), "port": 0, "workers": 4},
            "metrics": {"enabled": False},
        })  # fmt: skip
        server = VecdbServer(cfg).start()
        remote = vecdb.connect(f"127.0.0.1:{server.port}", timeout=30)
        close = remote.close

        def close_both() -> None:
            close()
            server.stop(grace=0)

        remote.close = close_both  # type: ignore[method-assign]
        return remote
    raise ValueError(f"unknown client mode {mode!r}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "xfail_mode(mode, reason): a known bug of one mode; strict xfail in that mode only",
    )
    config.addinivalue_line(
        "markers",
        "xfail_index(case, reason): a known bug of one IndexCase id; strict xfail there only",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Turn `xfail_mode(mode, reason)` and `xfail_index(case, reason)` into strict xfails of
    the tests run in that mode or index case."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        mode = callspec.params.get("client", callspec.params.get("shared_client"))
        case = callspec.params.get("index")
        for mark in item.iter_markers("xfail_mode"):
            if mark.args[0] == mode:
                item.add_marker(pytest.mark.xfail(strict=True, reason=mark.args[1]))
        for mark in item.iter_markers("xfail_index"):
            if case is not None and mark.args[0] == case.id:
                item.add_marker(pytest.mark.xfail(strict=True, reason=mark.args[1]))


@pytest.fixture(params=MODES, ids=MODES)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[vecdb.Client]:
    """A client over an empty database, closed at teardown."""
    c = make_client(request.param, tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module", params=MODES, ids=MODES)
def shared_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[vecdb.Client]:
    """One client per module and mode, for modules with many small cases (opening a data
    directory, or starting a server, costs far more than the case itself)."""
    c = make_client(request.param, tmp_path_factory.mktemp(f"shared-{request.param}"))
    try:
        yield c
    finally:
        c.close()


def drop_all(c: vecdb.Client) -> None:
    for info in c.list_collections():
        c.drop_collection(info.name)


@pytest.fixture
def clean_client(shared_client: vecdb.Client) -> Iterator[vecdb.Client]:
    """The module's shared client with no collections, as a fresh client would be; a module
    opts in with `client = clean_client`-style override (a fixture named `client`)."""
    drop_all(shared_client)
    yield shared_client
    drop_all(shared_client)


@pytest.fixture(params=INDEX_CASES, ids=[c.id for c in INDEX_CASES])
def index(request: pytest.FixtureRequest) -> IndexCase:
    """The index kind and state a test's collections use (flat, SPANN buffered, SPANN built)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so a failure reproduces."""
    return np.random.default_rng(20261127)
