"""A background thread that samples numbers over time: RSS of a process, file sizes.

Owns periodic sampling only: every `interval_s` it calls each probe (a name and a function
returning a number), keeps every sample with its time, and reports the maximum of each probe
and the longest gap between samples (a gap far above the interval means the thread was starved,
e.g. by code holding the GIL, and a peak may have been missed). /proc readers for RssAnon,
RssFile, VmRSS and VmHWM live here too. Must not start processes or build indexes.
"""

from __future__ import annotations

import array
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_INTERVAL_S = 0.02
STATUS_FIELDS = ("RssAnon", "RssFile", "VmRSS", "VmHWM")
Probe = Callable[[], float]


def status_kib(pid: int | str = "self", fields: tuple[str, ...] = STATUS_FIELDS) -> dict[str, int]:
    """The named fields of /proc/PID/status in KiB (0 where absent or the process is gone)."""
    out = dict.fromkeys(fields, 0)
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return out


def rss_anon_probe(pid: int | str = "self") -> Probe:
    """A probe of RssAnon (KiB) of `pid`."""
    return lambda: float(status_kib(pid, ("RssAnon",))["RssAnon"])


def fs_growth_probe(path: Path) -> Probe:
    """A probe of the bytes in use on the filesystem holding `path`, less those in use when
    it was made: what a build adds to the disk, unnamed files (a spilled buffer, a staged
    build input) included, which a walk of its directory does not see (and anything else
    written to that filesystem meanwhile)."""

    def used() -> int:
        st = os.statvfs(path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    start = used()
    return lambda: float(used() - start)


def files_bytes_probe(directory: Path, pattern: str, allocated: bool = False) -> Probe:
    """A probe of the total size (bytes) of the files matching `pattern` under `directory`;
    with `allocated`, the bytes allocated to them on disk (st_blocks): for sparse files (the
    rerank store punches the pages of dead rows) what they take, not their apparent size."""

    def probe() -> float:
        total = 0
        for p in directory.rglob(pattern):
            try:
                st = os.stat(p)
            except OSError:  # removed between listing and stat (a rewrite published by rename)
                continue
            total += st.st_blocks * 512 if allocated else st.st_size
        return float(total)

    return probe


class Sampler:
    """Samples `probes` every `interval_s` in a daemon thread, between start() and stop()."""

    def __init__(self, probes: Mapping[str, Probe], interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.probes = dict(probes)  # name -> function returning the current value
        self.interval_s = interval_s  # target time between samples
        # Samples are raw doubles (array.array), not lists of float objects: a float kept per
        # sample pins a pymalloc arena among the short-lived objects of the code being
        # measured, and the measured process then cannot give those arenas back (seen: +30 MiB
        # of RssAnon after a GloVe build with the sampler running, none without it).
        self.times = array.array("d")  # monotonic seconds since start(), one per sample
        self.values: dict[str, array.array[float]] = {n: array.array("d") for n in self.probes}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0  # monotonic time of start(); sample times are relative to it

    def sample(self) -> None:
        """Take one sample now (also called by start() and stop(), so both ends are seen)."""
        now = time.monotonic() - self.t0
        for name, probe in self.probes.items():
            self.values[name].append(probe())
        self.times.append(now)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> Sampler:
        self.t0 = time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="vecdb-bench-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Sampler:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        return self

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def max(self, name: str) -> float:
        return max(self.values[name]) if self.values[name] else 0.0

    def max_gap_s(self) -> float:
        """The longest time between two consecutive samples."""
        gaps = [b - a for a, b in zip(self.times, self.times[1:])]
        return max(gaps) if gaps else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "samples": len(self.times),
            "max_gap_ms": round(1000 * self.max_gap_s(), 1),
            **{f"max_{name}": self.max(name) for name in self.probes},
        }
