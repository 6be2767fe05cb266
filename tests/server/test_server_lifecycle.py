"""The server process: `vecdb serve` start-up and graceful SIGTERM/SIGINT shutdown, health per
service, reflection, Prometheus metrics, JSON logs, and config file plus env overrides.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from wire_helpers import DIM, health_status

import vecdb
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config

SERVE = [sys.executable, "-c", "from vecdb.cli.main import main; main()", "serve"]


def _wait_for_port(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """The port from the server's JSON "serving" log line."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("msg") == "serving":
                return int(rec["address"].rsplit(":", 1)[1])
        assert proc.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"server did not start: {log.read_text()}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_shuts_down_gracefully_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    """`vecdb serve` answers, then on SIGTERM/SIGINT drains, closes the database (the data
    directory can be reopened with the data intact) and exits 0, logging JSON lines."""
    data, log = tmp_path / "data", tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([*SERVE, "--data", str(data), "--port", "0", "--no-metrics"],
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    try:
        port = _wait_for_port(log, proc)
        with vecdb.connect(f"127.0.0.1:{port}") as c:
            c.create_collection("docs", DIM, "l2", index="flat")
            c.upsert("docs", [1, 2, 3], np.eye(3, DIM))
        assert health_status(port, "vecdb.v1.VectorDB") == "SERVING"
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["msg"] for r in records][-2:] == ["signal received, draining", "stopped"]
    assert records[0]["config"]["server"]["data"] == str(data)
    with vecdb.connect(str(data)) as local:  # lock released, data durable
        assert local.count("docs") == 3


def test_metrics_endpoint_reports_requests_errors_latency_and_sizes(
    start_server: Callable[..., VecdbServer],
) -> None:
    """/metrics on the side port counts calls by method and code, errors by code, has latency
    histograms per method and the size of each collection."""
    srv = start_server(metrics={"enabled": True, "port": 0})
    with vecdb.connect(f"127.0.0.1:{srv.port}") as c:
        c.create_collection("m", DIM, "l2", index="flat")
        c.upsert("m", [1, 2], np.ones((2, DIM)))
        c.count("m")
        with pytest.raises(vecdb.NotFound):
            c.count("missing")
    body = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5).read()
    text = body.decode()
    assert 'vecdb_requests_total{code="OK",method="Count"} 1.0' in text
    assert 'vecdb_request_errors_total{code="NOT_FOUND",method="Count"} 1.0' in text
    assert 'vecdb_request_seconds_bucket{le="0.001",method="Upsert"}' in text
    assert 'vecdb_collection_vectors{collection="m"} 2.0' in text
    assert "vecdb_upserted_vectors_total 2.0" in text


def test_health_reports_process_and_service(server: VecdbServer) -> None:
    """Both "" (the process) and "vecdb.v1.VectorDB" answer SERVING."""
    assert health_status(server.port) == "SERVING"
    assert health_status(server.port, "vecdb.v1.VectorDB") == "SERVING"


def test_reflection_is_off_by_default(server: VecdbServer) -> None:
    """Without server.reflection the reflection service is not registered."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        with pytest.raises(grpc.RpcError) as info:
            ProtoReflectionDescriptorDatabase(ch).get_services()
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_lists_the_services_when_enabled(
    start_server: Callable[..., VecdbServer],
) -> None:
    """With server.reflection, grpcurl-style reflection lists VectorDB and health."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    srv = start_server(server={"reflection": True})
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert {"vecdb.v1.VectorDB", "grpc.health.v1.Health"} <= services


def test_config_file_then_env_then_flags(tmp_path: Path) -> None:
    """TOML file values are overridden by VECDB__* variables, which flags override in turn."""
    toml = tmp_path / "vecdb.toml"
    toml.write_text('[server]\nport = 7800\ndata = "/srv/a"\n[limits]\nmax_queued_rpcs = 8\n'
                    '[auth]\nread_only_keys = ["r1"]\n')  # fmt: skip
    env = {"VECDB__SERVER__PORT": "7900", "VECDB__METRICS__ENABLED": "false",
           "VECDB__AUTH__READ_ONLY_KEYS": "r2,r3", "OTHER": "x"}  # fmt: skip
    cfg = load_config(toml, env=env, overrides={"server": {"data": "/srv/b"}})
    assert (cfg.server.port, cfg.server.data, cfg.limits.max_queued_rpcs) == (7900, "/srv/b", 8)
    assert cfg.metrics.enabled is False and cfg.auth.read_only_keys == ["r2", "r3"]
    assert cfg.redacted()["auth"]["read_only_keys"] == ["***", "***"]
    js = tmp_path / "vecdb.json"
    js.write_text(json.dumps({"limits": {"max_message_bytes": 2 * 1024 * 1024}}))
    assert load_config(js, env={}).limits.max_message_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize(
    "env,match",
    [
        ({"VECDB__SERVER__PROT": "1"}, "unknown config key server.prot"),
        ({"VECDB__NOPE__X": "1"}, "unknown config section"),
        ({"VECDB__SERVER__PORT": "many"}, "server.port='many'"),
        ({"VECDB__SERVER__PORT": "70000"}, "out of range"),
        ({"VECDB__METRICS__ENABLED": "maybe"}, "metrics.enabled"),
        ({"VECDB__LIMITS__MAX_MESSAGE_BYTES": "10"}, "max_message_bytes"),
    ],
)
def test_bad_config_is_an_error_naming_the_key(env: dict[str, str], match: str) -> None:
    """Typos and bad values are errors, never silently ignored."""
    with pytest.raises(vecdb.InvalidArgument, match=match):
        load_config(env=env)


def test_serve_reports_config_errors_and_exits_2(tmp_path: Path) -> None:
    """A broken config file stops `vecdb serve` with a one-line message."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECDB__")}
    proc = subprocess.run([*SERVE, "--config", str(bad)], capture_output=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert b"does not parse" in proc.stderr


def test_container_healthcheck_command(
    server: VecdbServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m vecdb.server.healthcheck` exits 0 on a serving server, 1 when none answers."""
    from vecdb.server import healthcheck

    assert healthcheck.main(["--address", f"127.0.0.1:{server.port}"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert healthcheck.main(["--address", "127.0.0.1:1", "--timeout", "0.5"]) == 1


def test_example_config_file_loads_to_the_defaults() -> None:
    """deploy/vecdb.example.toml is valid and documents the real defaults."""
    from vecdb.server.config import ServerConfig

    example = Path(__file__).resolve().parents[2] / "deploy" / "vecdb.example.toml"
    assert load_config(example, env={}) == ServerConfig()


def test_port_in_use_is_a_clear_error_and_releases_the_data_dir(
    server: VecdbServer, tmp_path: Path
) -> None:
    """A second server on a taken port fails with Unavailable and leaves its data directory
    unlocked (it can be opened right after)."""
    cfg = load_config(env={}, overrides={
        "server": {"data": str(tmp_path / "second"), "port": server.port},
        "metrics": {"enabled": False},
    })  # fmt: skip
    with pytest.raises(vecdb.Unavailable, match="cannot serve on") as err:
        VecdbServer(cfg).start()
    assert "metrics port" not in err.value.message  # metrics are off: no port to name
    with vecdb.connect(str(tmp_path / "second")) as local:
        assert local.list_collections() == []
