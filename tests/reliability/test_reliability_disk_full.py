"""Disk full: writes get RESOURCE_EXHAUSTED (DiskFull, reason DISK_FULL) naming the disk,
reads keep working, health reports writes NOT_SERVING (service "vecdb.v1.VectorDB.writes";
"" stays SERVING), writes resume by themselves once space is freed, nothing acknowledged is
lost, SIGTERM exits 0, and a server started on a full disk says so in one line.

Two ways: a real full disk (a small loop-mounted ext4 image: needs root, else skipped with
the reason) and, for every CI run, a simulation on any disk: the free-space reserve raised
above the free space, and a RocksDB write failing as on ENOSPC (the store goes fail-stop,
then reopens in-process once the disk has room). Real servers on 127.0.0.1, real RocksDB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loopdisk import loop_disk

import vecdb
from vecdb.engine import Database
from vecdb.errors import DiskFull, ResourceExhausted
from vecdb.server.app import WRITE_SERVICE, VecdbServer
from vecdb.server.config import load_config
from vecdb.storage import faults

DIM = 8


def health(port: int, service: str = "") -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Database, VecdbServer, vecdb.Client]]:
    db = Database(tmp_path / "db")
    db.create_collection("c", DIM, "l2")
    cfg = load_config(
        env={},
        overrides={"server": {"data": str(tmp_path / "db"), "port": 0, "workers": 4},
                   "metrics": {"enabled": False, "port": 0}},
    )  # fmt: skip
    srv = VecdbServer(cfg, db=db).start()
    client = vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20)
    yield db, srv, client
    client.close()
    srv.stop(grace=0)
    db.close()


def test_below_the_reserve_writes_are_refused_and_resume(
    served: tuple[Database, VecdbServer, vecdb.Client],
) -> None:
    """With less free disk than the reserve: upserts fail with DiskFull in both modes
    (same class, reason, retry_after), nothing changes, reads work, health says writes
    NOT_SERVING; once the disk has room again writes are accepted and health SERVING."""
    db, srv, remote = served
    db.upsert("c", [1, 2, 3], rows(3, 0))
    db.kv.reserve_bytes = faults.free_bytes(db.path) + 2**30  # the disk "fills"
    for client in (db, remote):
        with pytest.raises(DiskFull) as err:
            client.upsert("c", [4], rows(1, 1))
        assert err.value.reason == "DISK_FULL" and err.value.code == "RESOURCE_EXHAUSTED"
        assert str(db.path / "kv") in err.value.message and err.value.retry_after
    assert remote.count("c") == 3 and len(remote.get("c", [1, 2, 3])) == 3
    assert remote.search("c", rows(1, 0)[0], k=1).ids[0, 0] == 1
    wait_for(lambda: health(srv.port, WRITE_SERVICE) == "NOT_SERVING")
    assert health(srv.port) == "SERVING"  # reads go on
    db.kv.reserve_bytes = faults.DISK_RESERVE_BYTES  # space is freed
    wait_for(lambda: health(srv.port, WRITE_SERVICE) == "SERVING")
    remote.upsert("c", [4], rows(1, 1))
    assert remote.count("c") == 4


class FailingWrites:
    """Stands in for the Rdict: the disk fills during the write, which fails the way
    RocksDB reports ENOSPC."""

    def __init__(self, db: Any, kv: Any) -> None:
        self._db, self._kv = db, kv

    def write(self, *args: Any) -> None:
        self._kv.reserve_bytes = faults.free_bytes(self._kv.path) + 2**30
        raise Exception("IO error: No space left on device: While appending to file: 9.log")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_failed_store_write_is_fail_stop_then_reopens_in_process(tmp_path: Path) -> None:
    """A RocksDB write failing on a full disk: DiskFull, and every later write refused
    (RocksDB's own rule) while the disk is full; once it has room, the next write reopens
    RocksDB inside the process and succeeds; every acknowledged point is there."""
    db = Database(tmp_path / "db")
    try:
        db.create_collection("c", DIM, "l2")
        db.upsert("c", [1, 2], rows(2, 0))
        db.kv._db = FailingWrites(db.kv._db, db.kv)  # type: ignore[assignment]
        with pytest.raises(DiskFull):
            db.upsert("c", [3], rows(1, 1))
        assert db.kv.write_problem()
        with pytest.raises(DiskFull):  # still full: refused without asking RocksDB
            db.upsert("c", [3], rows(1, 1))
        assert len(db.get("c", [1, 2])) == 2  # reads go on
        db.kv.reserve_bytes = faults.DISK_RESERVE_BYTES  # room again
        db.upsert("c", [3], rows(1, 1))  # reopened in-process (the failing stand-in dropped)
        assert db.kv.write_problem() == ""
        assert sorted(r.id for r in db.get("c", [1, 2, 3])) == [1, 2, 3]
    finally:
        db.close()
    with Database(tmp_path / "db") as again:
        assert again.count("c") == 3


# -- the real thing ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB ext4 image mounted on a loop device (root only)."""
    with loop_disk(tmp_path / "disk.img", tmp_path / "mnt", 64) as mnt:
        yield mnt


def start_server(data: Path) -> tuple[subprocess.Popen[str] | None, int, str]:
    """`vecdb serve` on `data`: (process, port, "") once it serves, or (None, 0, stderr)
    when it exits first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vecdb", "serve", "--data", str(data), "--port", "0",
         "--no-metrics"],
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=":".join(sys.path)),
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("{") and json.loads(line).get("msg") == "serving":
            return proc, int(json.loads(line)["address"].rsplit(":", 1)[1]), ""
    proc.wait(timeout=30)
    return None, 0, "".join(seen)


def fill(path: Path) -> Path:
    filler = path / "filler"
    chunk = b"\xab" * 2**20
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    with open(filler, "ab") as f:  # the last partial MiB
        try:
            while True:
                f.write(b"\xab" * 4096)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_real_full_disk(small_disk: Path) -> None:
    """The whole story on a real full file system, through a real `vecdb serve`."""
    data = small_disk / "db"
    proc, port, _ = start_server(data)
    assert proc is not None
    acked: list[int] = []
    try:
        with vecdb.connect(f"127.0.0.1:{port}", timeout=20) as c:
            c.create_collection("c", DIM, "l2")
            for i in range(20):
                c.upsert("c", [i], rows(1, i))
                acked.append(i)
            filler = fill(small_disk)
            refused = 0
            for i in range(20, 40):
                try:
                    c.upsert("c", [i], rows(1, i))
                    acked.append(i)
                except ResourceExhausted as exc:
                    assert exc.reason == "DISK_FULL" and "full" in exc.message
                    assert str(data) in exc.message  # names the disk's directory
                    refused += 1
            assert refused == 20
            assert len(c.get("c", acked)) == len(acked)  # reads go on
            assert c.search("c", rows(1, 0)[0], k=1).ids[0, 0] == 0
            wait_for(lambda: health(port, WRITE_SERVICE) == "NOT_SERVING")
            assert health(port) == "SERVING"
            filler.unlink()
            wait_for(lambda: health(port, WRITE_SERVICE) == "SERVING")
            c.upsert("c", [100], rows(1, 100))  # resumed without a restart
            acked.append(100)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # Starting on a full disk: it says so in one line, no traceback; nothing acked is lost.
    filler = fill(small_disk)
    proc, port, err = start_server(data)
    try:
        print(
            f"start on a full disk: {'refused: ' + err.strip().splitlines()[-1] if proc is None else 'served'}"
        )
        if proc is None:
            assert "Traceback" not in err, err
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert lines[-1].startswith("vecdb serve:") and "full" in lines[-1], err
        else:  # it opened (the store needed no new bytes): writes refused, reads served
            with vecdb.connect(f"127.0.0.1:{port}", timeout=20) as c:
                with pytest.raises(ResourceExhausted):
                    c.upsert("c", [200], rows(1, 200))
                assert len(c.get("c", acked)) == len(acked)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        filler.unlink()
    proc, port, err = start_server(data)  # space again: every acknowledged point is there
    assert proc is not None, err
    try:
        with vecdb.connect(f"127.0.0.1:{port}", timeout=20) as c:
            assert sorted(r.id for r in c.get("c", acked)) == sorted(acked)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
