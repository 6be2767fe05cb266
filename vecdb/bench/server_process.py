"""A `vecdb serve` child process for benchmarking vecdb over gRPC (remote mode).

Owns the server's lifecycle as the benchmark sees it: start `vecdb serve` on 127.0.0.1 with an
ephemeral port and pinned thread counts, learn the port from its JSON "serving" log line, read
its CPU time and RSS from /proc, and stop it with SIGTERM (graceful drain, the database closed).
Must not import the server or engine: the server is a separate process, as in production.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vecdb.errors import Internal, Unavailable

START_TIMEOUT_S = 120.0  # opening a large collection rebuilds in-memory state
STOP_TIMEOUT_S = 60.0
THREAD_VARS = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
SERVE = "from vecdb.cli.main import main; main()"


class ServerProcess:
    """One running `vecdb serve --data DIR --port 0`."""

    def __init__(self, data_dir: Path, threads: int) -> None:
        self.data_dir = data_dir  # the database directory it serves
        self.threads = threads  # pinned through the thread environment variables
        self.address = ""  # "127.0.0.1:PORT" once started
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the server)
            prefix="vecdb-serve-", suffix=".log", delete=False
        )
        env = dict(os.environ)
        env.update(dict.fromkeys(THREAD_VARS, str(threads)))
        argv = [sys.executable, "-c", SERVE, "serve", "--data", str(data_dir)]
        argv += ["--host", "127.0.0.1", "--port", "0", "--no-metrics", "--log-level", "info"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=self._log, env=env, start_new_session=True
        )
        try:
            self.address = self._wait_serving()
        except BaseException:  # interrupted or failed: never leave a server behind
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def _wait_serving(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        log_path = Path(self._log.name)
        while time.monotonic() < deadline:
            for line in log_path.read_text(errors="replace").splitlines():
                if '"serving"' not in line:
                    continue
                try:
                    address = str(json.loads(line)["address"])
                except (json.JSONDecodeError, KeyError):
                    continue
                return "127.0.0.1:" + address.rsplit(":", 1)[1]
            if self.proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise Unavailable(f"vecdb serve exited with {self.proc.returncode}: {tail}")
            time.sleep(0.1)
        raise Unavailable(f"vecdb serve did not report serving within {START_TIMEOUT_S:.0f} s")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process (all its threads)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError as exc:
            raise Internal(f"cannot read the CPU time of vecdb serve (pid {self.pid})") from exc
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

    def status_kib(self) -> dict[str, int]:
        """RssAnon, RssFile and VmHWM (peak RSS) of the server process in KiB."""
        out = {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0])
        except OSError:
            pass
        return out

    def kill(self) -> None:
        """SIGKILL now, without a drain (a watchdog protecting the disk cannot wait)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (graceful: drains calls and closes the database), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)
