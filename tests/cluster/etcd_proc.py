"""A real etcd server process for the cluster tests: loopback, free ports, its own data dir.

`EtcdProcess(data_dir).start()` runs `etcd` (Debian package `etcd-server`) on 127.0.0.1 with a
free client port and a free peer port and waits until it answers; `stop()` ends it (SIGTERM,
then SIGKILL); `start()` again restarts it on the same data directory and ports; `wipe()`
restarts it empty. No lease, no systemd: a plain child process.

A free port is only free when it is looked up: another test worker's etcd can take it before
ours binds it, and ours then exits while the port answers for the other one. Each process has a
member name of its own, and `start()` counts it as serving only when the etcd answering on its
port has that name and its own process is alive; a first start that lost its ports tries fresh
ones.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

INSTALL_HINT = "apt-get install etcd-server (`make test` installs it when it can)"
START_TIMEOUT_S = 30.0
PORT_TRIES = 5  # a first start whose ports were taken meanwhile tries fresh ones


def etcd_binary() -> str | None:
    """The etcd executable: on PATH, or where Debian puts it."""
    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdProcess:
    """One single-member etcd cluster on loopback."""

    def __init__(self, data_dir: Path, binary: str | None = None) -> None:
        binary = binary or etcd_binary()
        if binary is None:
            raise RuntimeError(f"etcd is not installed: {INSTALL_HINT}")
        self.binary = binary
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # etcd warns about anything wider
        self.name = f"vecdb-test-{uuid.uuid4().hex[:8]}"
        self._pick_ports()
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self._log_from = 0  # where this launch's lines start in the log
        atexit.register(self.stop)  # never outlive the test run

    def _pick_ports(self) -> None:
        self.client_port = free_port()
        self.peer_port = free_port()
        while self.peer_port == self.client_port:
            self.peer_port = free_port()
        self.endpoint = f"127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "etcd is not running"
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start etcd (on the same data dir and ports as before) and wait until it serves.
        The first start picks fresh ports when another process took them meanwhile."""
        if self.running:
            return
        first = self._started_once is False
        for attempt in range(PORT_TRIES if first else 1):
            if self._launch():
                self._started_once = True
                return
            self.stop()
            if first and attempt + 1 < PORT_TRIES:
                self._pick_ports()
                shutil.rmtree(self.data_dir)  # nothing of ours is in it yet
                self.data_dir.mkdir(parents=True)
                self.data_dir.chmod(0o700)
        raise RuntimeError(
            f"etcd {self.name} could not serve on 127.0.0.1:{self.client_port} "
            f"(another process holds the port?):\n{self.log_tail()}"
        )

    def _launch(self) -> bool:
        """Run etcd once: True when it serves as itself, False when it exited because its
        ports were taken, or another etcd answers on them."""
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--initial-cluster-state=new",
            "--log-level=warn",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self._log_from = log.tell()
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self._wait_ready()

    def _wait_ready(self) -> bool:
        import etcd3

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                if "address already in use" in self._log_since_launch():
                    return False
                raise RuntimeError(f"etcd exited at start:\n{self.log_tail()}")
            # A new client each try: etcd3 marks a refused endpoint failed for minutes.
            client = etcd3.client("127.0.0.1", self.client_port, timeout=1)
            try:
                client.get("/vecdb-test-ready")
                names = {member.name for member in client.members}
                if self.name not in names:  # another etcd holds our client port
                    return False
                return self.running
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"etcd did not serve within {START_TIMEOUT_S} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        """End etcd (SIGTERM, SIGKILL after 10 s) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def wipe(self) -> None:
        """Stop etcd, delete its data and start an empty one on the same ports (what a
        replaced volume does: the revision starts again from 1)."""
        self.stop()
        shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        self.data_dir.chmod(0o700)
        self.start()

    def _log_since_launch(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_from)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
