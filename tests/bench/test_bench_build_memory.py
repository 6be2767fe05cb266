"""The RSS sampler and the build-memory row (peak, after build, fresh open) on toy runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import numpy.typing as npt

from vecdb.bench.build_memory import children_anon_probe, measure_build_memory
from vecdb.bench.build_report import build_memory_table, build_time_table
from vecdb.bench.datasets import load_dataset
from vecdb.bench.sampler import (
    Sampler,
    files_bytes_probe,
    fs_growth_probe,
    rss_anon_probe,
    status_kib,
)


def test_sampler_sees_a_transient_allocation() -> None:
    """A 64 MiB array allocated and freed between samples' start and stop shows in the peak."""
    before = status_kib()["RssAnon"]
    with Sampler({"anon": rss_anon_probe()}, interval_s=0.01) as s:
        x = np.ones(64 << 18, dtype=np.float32)  # 64 MiB, touched
        time.sleep(0.1)
        del x
        time.sleep(0.05)
    assert s.max("anon") - before > 48 * 1024
    assert s.values["anon"][-1] - before < 32 * 1024  # freed by the end
    assert len(s.times) >= 5 and list(s.times) == sorted(s.times)
    assert s.summary()["samples"] == len(s.times) and s.max_gap_s() < 1.0


def test_files_probe_sums_matching_files(tmp_path: Path) -> None:
    """The posting-file probe adds up the sizes of matching files, in subdirectories too."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "postings.1.bin").write_bytes(b"x" * 100)
    (tmp_path / "postings.2.bin").write_bytes(b"x" * 20)
    (tmp_path / "other.bin").write_bytes(b"x" * 999)
    assert files_bytes_probe(tmp_path, "postings*.bin")() == 120.0


def test_fs_growth_probe_counts_an_unnamed_file(tmp_path: Path) -> None:
    """The filesystem's growth counts the blocks of a file with no name (as a spilled
    buffer is), which a walk of the directory cannot see."""
    probe = fs_growth_probe(tmp_path)
    fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR, 0o600)
    try:
        os.posix_fallocate(fd, 0, 64 << 20)
        assert list(tmp_path.iterdir()) == []
        assert probe() >= 60 << 20  # (other writers on the filesystem may add or free some)
    finally:
        os.close(fd)


def test_build_memory_row_on_a_toy_build(tmp_path: Path) -> None:
    """Fresh build and open processes report consistent columns for a small SPANN build."""
    ds = load_dataset("synthetic:3000:32", cache_dir=tmp_path / "cache")
    spec = {
        "metric": ds.metric,
        "dim": 32,
        "n": 3000,
        "build_params": {"index": "spann", "index_params": {}},
        "base": None,
        "base_path": str(ds.directory / "base.npy"),
    }
    work = tmp_path / "work"
    work.mkdir()
    row = measure_build_memory("vecdb-spann", spec, 1, work)
    assert row["build_mem_raw_mib"] == round(3000 * 32 * 4 / 2**20, 2)
    assert row["build_mem_build_s"] > 0 and row["build_mem_samples"] >= 2
    assert row["build_mem_peak_anon_mib"] >= row["build_mem_after_anon_mib"] - 1
    # A toy index (375 KiB raw) adds next to nothing to a fresh process whose baseline holds
    # the kernels of every search path (the warm-up's), not the ~10 MiB of compiled code;
    # its growth is within the allocator's noise, which can be a little below the baseline.
    fresh = row["build_mem_fresh_anon_mib"]
    assert -1 < fresh < 4 and row["build_mem_vmhwm_mib"] > 0
    assert row["build_mem_disk_peak_mib"] > 0  # the index written (RocksDB, postings)
    assert row["build_mem_after_over_fresh"] == (
        round(row["build_mem_after_anon_mib"] / fresh, 3) if fresh > 0 else None
    )
    raw_mib = 3000 * 32 * 4 / 2**20
    assert abs(row["build_mem_peak_x_raw"] - row["build_mem_peak_anon_mib"] / raw_mib) < 0.01
    lines = build_memory_table([{"system": "vecdb-spann", **row}])
    assert len(lines) == 3 and lines[2].startswith("| vecdb-spann | 0.4 |")


def test_build_time_table_divides_by_each_peer() -> None:
    """The build-time table shows vecdb's build seconds over each peer's."""
    rows = [
        {"system": "vecdb-spann", "is_ours": True, "build_s": 10.0, "warmup_s": 3.25},
        {"system": "hnswlib", "is_ours": False, "build_s": 40.0},
        {"system": "faiss-ivf", "is_ours": False, "build_s": 2.0},
    ]
    lines = build_time_table(rows)
    assert lines[2] == "| (peer build s) | - | - | 40.0 | 2.0 |"
    assert lines[3] == "| vecdb-spann | 10.0 | 3.2 | 0.25x | 5.00x |"


def test_children_probe_counts_a_grandchild() -> None:
    """The probe sums the RssAnon of processes this one started and theirs (a child build's
    memory counts in the row's peak); 0 once they are gone."""
    probe = children_anon_probe()
    hold = "import numpy as np, sys; x = np.ones(48 << 18, np.float32); print(1, flush=True); sys.stdin.read()"
    outer = f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {hold!r}], stdin=sys.stdin); p.wait()"
    proc = subprocess.Popen(
        [sys.executable, "-c", outer], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline().strip() == b"1"  # the grandchild holds 48 MiB, touched
        assert probe() > 40 * 1024
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert probe() == 0


def test_timed_build_warms_kernels_before_the_clock(tmp_path: Path) -> None:
    """A real vecdb system: its kernel warm-up (compiling or loading numba's cache) runs
    before the build clock starts and is reported apart, as `warmup_s`."""
    from types import SimpleNamespace

    from vecdb.bench.run import timed_build
    from vecdb.bench.systems import make_system

    rng = np.random.default_rng(3)
    base = rng.standard_normal((300, 16)).astype(np.float32)
    system = make_system("vecdb-spann", "l2", 16, len(base), {}, None)
    order: list[str] = []
    warm, build = system.import_libraries, system.build

    def warm_logged() -> None:
        order.append("warm")
        warm()

    def build_logged(base: npt.NDArray[np.float32], workdir: Path) -> None:
        order.append("build")
        build(base, workdir)

    system.import_libraries = warm_logged  # type: ignore[method-assign]
    system.build = build_logged  # type: ignore[method-assign]
    threads = numba.get_num_threads()
    try:
        out = timed_build(system, SimpleNamespace(base=base), 1, tmp_path)  # type: ignore[arg-type]
    finally:
        system.close()
        numba.set_num_threads(threads)  # the build set 1; later tests need theirs
    assert order == ["warm", "build"]
    assert out["warmup_s"] > 0 and out["build_s"] > 0 and out["build_threads"] == 1
