"""The processes of `vecdb bench --shards`: an etcd, N shard servers and a router, on loopback.

Owns their lifecycle only: etcd on free loopback ports in a temporary directory (ready when its
`/health` says so), `vecdb serve` children with the cluster role, etcd endpoint, catalog prefix
and shard index given as `VECDB__CLUSTER__*` variables (the way a Kubernetes manifest gives
them), each learning its port from the "serving" log line like `ServerProcess`, and stopping
everything with SIGTERM. Must not import the server, engine or cluster code: as in production,
they are separate processes reached over gRPC.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from vecdb.bench.server_process import SERVE, THREAD_VARS, ServerProcess
from vecdb.errors import Unavailable

ETCD_START_TIMEOUT_S = 30.0
ETCD_PORT_TRIES = 5  # starts tried when another process takes the ports picked
ETCD_HINT = "the etcd binary is needed: apt-get install etcd-server"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (etcd cannot be told to pick one itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdProcess:
    """One etcd member on loopback with its data in a temporary directory."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else "")
        if not binary:
            raise Unavailable(ETCD_HINT)
        # A free port is free only when looked up: another process may bind it before etcd
        # does. Then this etcd exits and the port answers for someone else, so an etcd counts
        # as started only when the member answering on its port has its name; if not, fresh
        # ports are tried.
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        self._log_path = workdir / "etcd.log"
        for _ in range(ETCD_PORT_TRIES):
            self.port = free_port()  # client port
            self.endpoint = f"127.0.0.1:{self.port}"  # what VECDB__CLUSTER__ETCD names
            peer = f"http://127.0.0.1:{free_port()}"
            client = f"http://{self.endpoint}"
            data = workdir / "etcd"
            shutil.rmtree(data, ignore_errors=True)  # nothing of a failed start is kept
            argv = [binary, "--name", self.name, "--data-dir", str(data),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"{self.name}={peer}",
                    "--quota-backend-bytes", str(1 << 30)]  # fmt: skip
            with open(self._log_path, "ab") as log:
                self._log_from = log.tell()  # where this start's lines begin
                self.proc = subprocess.Popen(
                    argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
                )
            try:
                if self._wait_healthy(client):
                    return
            except BaseException:
                self.stop()
                raise
            self.stop()
        raise Unavailable(f"etcd could not get a free port in {ETCD_PORT_TRIES} tries: "
                          f"{self._log_tail()}")  # fmt: skip

    def _log_tail(self) -> list[str]:
        return self._log_path.read_text(errors="replace").strip().splitlines()[-3:]

    def _wait_healthy(self, client: str) -> bool:
        """True once this etcd serves; False when its ports turned out taken (it exited
        saying so, or another etcd answers on them)."""
        deadline = time.monotonic() + ETCD_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(self._log_path, "rb") as log:
                    log.seek(self._log_from)
                    if b"address already in use" in log.read():
                        return False
                tail = self._log_tail()
                raise Unavailable(f"etcd exited with {self.proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=1) as resp:
                    healthy = json.loads(resp.read()).get("health") == "true"
                if healthy:
                    request = urllib.request.Request(
                        f"{client}/v3/cluster/member/list", data=b"{}", method="POST"
                    )
                    with urllib.request.urlopen(request, timeout=1) as resp:
                        names = {m.get("name") for m in json.loads(resp.read())["members"]}
                    return self.name in names and self.proc.poll() is None
            except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
                pass
            time.sleep(0.1)
        raise Unavailable(f"etcd did not become healthy within {ETCD_START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class NodeProcess(ServerProcess):
    """A `vecdb serve` child in a cluster role: a shard (with a data directory) or a router."""

    def __init__(self, cluster_env: dict[str, str], data_dir: Path | None, threads: int) -> None:
        self.data_dir = data_dir or Path()  # a router has none
        self.threads = threads
        self.address = ""
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the server)
            prefix="vecdb-serve-", suffix=".log", delete=False
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECDB__")}
        env.update(dict.fromkeys(THREAD_VARS, str(threads)))
        env.update(cluster_env)
        argv = [sys.executable, "-c", SERVE, "serve"]
        if data_dir is not None:
            argv += ["--data", str(data_dir)]
        argv += ["--host", "127.0.0.1", "--port", "0", "--no-metrics", "--log-level", "info"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=self._log, env=env, start_new_session=True
        )
        try:
            self.address = self._wait_serving()
        except BaseException:
            self.stop()
            raise


class Cluster:
    """N shards and one router over a shared etcd, under a catalog prefix of their own."""

    def __init__(self, etcd: EtcdProcess, n_shards: int, workdir: Path, threads: int) -> None:
        self.prefix = f"/vecdb-bench-{uuid.uuid4().hex[:12]}"  # fresh catalog per cluster
        self.shards: list[NodeProcess] = []
        self.router: NodeProcess | None = None
        common = {"VECDB__CLUSTER__ETCD": etcd.endpoint, "VECDB__CLUSTER__PREFIX": self.prefix}
        try:
            for i in range(n_shards):
                env = {
                    **common,
                    "VECDB__CLUSTER__ROLE": "shard",
                    "VECDB__CLUSTER__SHARD_INDEX": str(i),
                }
                self.shards.append(NodeProcess(env, workdir / f"shard-{i}", threads))
            shards = ",".join(s.address for s in self.shards)
            env = {**common, "VECDB__CLUSTER__ROLE": "router", "VECDB__CLUSTER__SHARDS": shards}
            self.router = NodeProcess(env, None, threads)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        assert self.router is not None
        return self.router.address

    def cpu_seconds(self) -> float:
        """CPU seconds of the router and every shard."""
        procs = [*self.shards, *([self.router] if self.router else [])]
        return sum(p.cpu_seconds() for p in procs)

    def stop(self) -> None:
        for p in [*([self.router] if self.router else []), *self.shards]:
            p.stop()
