"""Fixtures of the server tests: in-process servers on 127.0.0.1:0, a remote client, a raw
stub, a slow engine and throw-away certificates. Helpers live in `wire_helpers`.

Every server here listens on loopback only and on an ephemeral port, and is stopped at
teardown.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from wire_helpers import DIM, SlowDb, make_certs, server_config

import vecdb
from vecdb.engine import Database
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., VecdbServer]]:
    """`start_server(db=None, **sections)` starts a server; all are stopped at teardown."""
    started: list[VecdbServer] = []

    def start(db: Any = None, **sections: dict[str, Any]) -> VecdbServer:
        data = tmp_path / f"db{len(started)}"
        srv = VecdbServer(server_config(data, **sections), db=db).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop(grace=0)


@pytest.fixture
def server(start_server: Callable[..., VecdbServer]) -> VecdbServer:
    """A plain server (no auth, no TLS) over an empty database."""
    return start_server()


@pytest.fixture
def remote(server: VecdbServer) -> Iterator[vecdb.Client]:
    """A remote client of `server`."""
    with vecdb.connect(f"127.0.0.1:{server.port}", timeout=20) as c:
        yield c


@pytest.fixture
def stub(server: VecdbServer) -> Iterator[pb_grpc.VectorDBStub]:
    """A raw generated stub, for requests the SDK would never build."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield pb_grpc.VectorDBStub(ch)


@pytest.fixture
def slow_db(tmp_path: Path) -> Iterator[SlowDb]:
    """A `SlowDb` over a database with a small "base" collection."""
    db = Database(tmp_path / "slow")
    db.create_collection("base", DIM, "l2", index="flat")
    db.upsert("base", [1, 2], np.ones((2, DIM), np.float32))
    yield SlowDb(db)
    db.close()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Certificates made with the openssl CLI (see `wire_helpers.make_certs`)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    return make_certs(tmp_path_factory.mktemp("certs"))
