"""Index work seen from a server: state in GetCollection, Optimize with and without waiting,
engine settings from the config, Prometheus gauges of the buffer and the index, build logs."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import numpy as np
import pytest

import vecdb
from vecdb.errors import InvalidArgument
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config

DIM = 8


def _wait_ready(c: vecdb.Client, name: str) -> vecdb.CollectionInfo:
    deadline = time.monotonic() + 60
    while (info := c.get_collection(name)).index_state != "ready":
        assert time.monotonic() < deadline, f"still {info.index_state}"
        time.sleep(0.02)
    return info


def test_optimize_without_waiting_and_index_state_over_the_wire(
    start_server: Callable[..., VecdbServer],
) -> None:
    """Buffered points are reported as such; Optimize(no_wait) returns at once and the
    state, counts and last build time reach the client; metrics show the same numbers."""
    srv = start_server(metrics={"enabled": True, "port": 0}, engine={"idle_seconds": 3600})
    x = np.random.default_rng(0).standard_normal((500, DIM)).astype(np.float32)
    with vecdb.connect(f"127.0.0.1:{srv.port}") as c:
        c.create_collection("s", DIM, "l2")
        c.upsert("s", list(range(500)), x)
        info = c.get_collection("s")
        assert (info.count, info.indexed, info.buffered, info.index_state) == (500, 0, 500, "idle")
        c.optimize("s", wait=False)
        info = _wait_ready(c, "s")
        assert (info.indexed, info.buffered) == (500, 0)
        assert info.last_build_seconds is not None and info.last_build_seconds >= 0
        c.upsert("s", [1000], x[:1])
        c.optimize("s")  # waits
        assert c.get_collection("s").indexed == 501
        with pytest.raises(InvalidArgument, match="wait"):
            c.optimize("s", wait="yes")  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'vecdb_collection_indexed_vectors{collection="s"} 501.0' in text
    assert 'vecdb_collection_buffered_vectors{collection="s"} 0.0' in text
    assert 'vecdb_collection_index_state{collection="s",state="ready"} 1.0' in text
    assert 'vecdb_write_stalls_total{collection="s"} 0.0' in text
    assert 'vecdb_collection_last_build_seconds{collection="s"}' in text


def test_engine_settings_come_from_the_config_and_are_bounded() -> None:
    cfg = load_config(env={"VECDB__ENGINE__DRAIN_VECTORS": "500"}, overrides={})
    assert cfg.engine.settings().drain_vectors == 500
    with pytest.raises(InvalidArgument, match="idle_seconds"):
        load_config(env={}, overrides={"engine": {"idle_seconds": -1.0}})
    with pytest.raises(InvalidArgument, match="unknown config key engine.turbo"):
        load_config(env={}, overrides={"engine": {"turbo": 1}})


def test_the_server_logs_build_start_and_end(
    start_server: Callable[..., VecdbServer], caplog: pytest.LogCaptureFixture
) -> None:
    srv = start_server(engine={"idle_seconds": 3600})
    with (
        caplog.at_level("INFO", logger="vecdb.engine"),
        vecdb.connect(f"127.0.0.1:{srv.port}") as c,
    ):
        c.create_collection("s", DIM, "l2")
        c.upsert("s", list(range(50)), np.ones((50, DIM), np.float32) * np.arange(50)[:, None])
        c.optimize("s")
    started = [r for r in caplog.records if r.getMessage() == "index build started"]
    finished = [r for r in caplog.records if r.getMessage() == "index build finished"]
    assert len(started) == 1 and len(finished) == 1
    assert started[0].vectors == 50 and finished[0].collection == "s"  # type: ignore[attr-defined]
    assert finished[0].seconds >= 0  # type: ignore[attr-defined]


def test_vecdb_optimize_follows_a_remote_build(start_server: Callable[..., VecdbServer]) -> None:
    from click.testing import CliRunner

    from vecdb.cli.main import main

    srv = start_server(engine={"idle_seconds": 3600})
    with vecdb.connect(f"127.0.0.1:{srv.port}") as c:
        c.create_collection("s", DIM, "cosine")
        c.upsert("s", list(range(200)), np.random.default_rng(1).standard_normal((200, DIM)))
    target = f"127.0.0.1:{srv.port}"
    out = CliRunner().invoke(main, ["optimize", "s", "--target", target])
    assert out.exit_code == 0, out.output
    assert "s: ready, 200 points indexed" in out.output
    out = CliRunner().invoke(main, ["optimize", "s", "--target", target, "--no-wait"])
    assert out.exit_code == 0, out.output
