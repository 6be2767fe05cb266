"""Fixtures of the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config


@pytest.fixture(params=["local", "remote"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An embedded data directory, or the address of a real server on 127.0.0.1 (its data
    in tmp_path / "srv", metrics off), stopped after the test."""
    if request.param == "local":
        yield str(tmp_path / "db")
        return
    cfg = load_config(env={}, overrides={"server": {"data": str(tmp_path / "srv"), "port": 0},
                                         "metrics": {"enabled": False}})  # fmt: skip
    srv = VecdbServer(cfg).start()
    yield f"127.0.0.1:{srv.port}"
    srv.stop(grace=0)
