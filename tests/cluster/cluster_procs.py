"""Real cluster processes for the router tests: `vecdb serve --role shard` and `--role router`
on 127.0.0.1, each with its JSON log in a file, the bound port read from its "serving" line.

A shard first binds port 0; `restart()` binds the same port again (the catalog's shard map
names it), on the same data directory. `signal()` sends SIGKILL / SIGSTOP / SIGCONT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

SERVE = [sys.executable, "-m", "vecdb", "serve"]
START_TIMEOUT = 60.0


def wait_serving(log: Path, proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> int:
    """The port of the "serving" log line (the last one: a restart appends to the log)."""
    end = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < end:
        lines = log.read_text().splitlines()
        for line in lines[seen:]:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "serving":
                return int(rec["address"].rsplit(":", 1)[1])
        assert proc.poll() is None, f"process exited {proc.returncode}: {log.read_text()}"
        time.sleep(0.03)
    proc.kill()
    raise AssertionError(f"process did not start serving: {log.read_text()}")


class Proc:
    """One `vecdb serve` process."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args  # flags after `vecdb serve`, without --port
        self.log = log
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def launch(self) -> Proc:
        """Start without waiting (use `ready()`), on the known port or on a free one."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [*SERVE, *self.args, "--host", "127.0.0.1", "--port", str(self.port),
                 "--no-metrics"], stdout=subprocess.DEVNULL, stderr=err, env=env,
            )  # fmt: skip
        return self

    def ready(self) -> Proc:
        assert self.proc is not None
        self.port = wait_serving(self.log, self.proc)
        return self

    def start(self) -> Proc:
        return self.launch().ready()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=10)

    def restart(self) -> Proc:
        """A new process on the same port (after a kill), waited until serving."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        before = len(self.log.read_text().splitlines())
        self.launch()
        assert self.proc is not None
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            lines = self.log.read_text().splitlines()[before:]
            if any('"msg": "serving"' in line for line in lines):
                return self
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.03)
        raise AssertionError(f"restart did not serve: {self.log.read_text()}")

    def terminate(self) -> None:
        """Ask for a graceful stop without waiting (`stop()` waits)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def shard(root: Path, index: int, etcd: str, prefix: str, role: str = "shard") -> Proc:
    """A shard process (not started) with its data in root/shard-<index>."""
    args = ["--data", str(root / f"shard-{index}")]
    if role == "shard":
        args += ["--role", "shard", "--etcd", etcd, "--shard-index", str(index)]
    env_prefix = ["--config", str(_prefix_config(root, prefix))]
    return Proc(args + env_prefix, root / f"shard-{index}.log")


def router(root: Path, etcd: str, prefix: str, shards: list[str], name: str = "router") -> Proc:
    args = ["--role", "router", "--etcd", etcd, "--shards", ",".join(shards),
            "--config", str(_prefix_config(root, prefix))]  # fmt: skip
    return Proc(args, root / f"{name}.log")


def _prefix_config(root: Path, prefix: str) -> Path:
    """A config file setting the catalog prefix (the CLI has no flag for it)."""
    path = root / "cluster.toml"
    path.write_text(f'[cluster]\nprefix = "{prefix}"\n')
    return path


class Cluster:
    """etcd (given) + `n` shard processes + an in-process router on a catalog prefix of its
    own. `client()` connects the remote SDK to the router; `stop()` ends everything."""

    def __init__(self, root: Path, etcd: str, n: int = 3, *, margin_ms: int = 50) -> None:
        from vecdb.cluster.catalog import EtcdCatalog

        self.root, self.etcd = root, etcd
        self.prefix = f"/vecdb-router-{uuid.uuid4().hex[:10]}"
        self.shards = [shard(root, i, etcd, self.prefix) for i in range(n)]
        for s in self.shards:  # start together: their start-ups overlap
            s.launch()
        for s in self.shards:
            s.ready()
        self.catalog = EtcdCatalog(etcd, prefix=self.prefix)
        self.router = router_server(self.catalog, [s.address for s in self.shards], margin_ms)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.router.port}"

    def stop(self) -> None:
        self.router.stop(grace=0.5)
        self.catalog.close()
        for s in self.shards:  # all drain at once
            s.terminate()
        for s in self.shards:
            s.stop()


def router_server(
    catalog: Any,
    shards: list[str],
    margin_ms: int = 50,
    auth: dict[str, Any] | None = None,
    deadline_s: float = 10.0,
    max_message_bytes: int | None = None,
) -> Any:
    """An in-process RouterServer on 127.0.0.1:<ephemeral> over `catalog` (with `auth`: the
    `[auth]` settings, e.g. the shards' keys; `deadline_s`: `cluster.default_deadline_s`;
    `max_message_bytes`: `limits.max_message_bytes`)."""
    from vecdb.cluster.router_app import RouterServer
    from vecdb.server.config import load_config

    cfg = load_config(env={}, overrides={
        "server": {"host": "127.0.0.1", "port": 0, "data": ""},
        "metrics": {"enabled": False},
        "cluster": {"role": "router", "shards": shards, "deadline_margin_ms": margin_ms,
                    "default_deadline_s": deadline_s},
        "auth": auth or {},
        **({"limits": {"max_message_bytes": max_message_bytes}} if max_message_bytes else {}),
    })  # fmt: skip
    return RouterServer(cfg, catalog).start()
