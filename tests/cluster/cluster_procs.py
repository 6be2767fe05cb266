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
from pathlib import Path

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
