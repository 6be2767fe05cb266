"""The host thread-scaling probe (`vecdb.bench.scaling`) and its provenance line."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vecdb.bench import scaling
from vecdb.bench.report import provenance_lines


def test_random_cycle_visits_every_index_once() -> None:
    nxt = scaling.random_cycle(1000, seed=3)
    seen = np.zeros(1000, bool)
    i = 0
    for _ in range(1000):
        assert not seen[i]
        seen[i] = True
        i = int(nxt[i])
    assert i == 0 and seen.all()  # back at the start after exactly n hops


def test_kernels_match_numpy() -> None:
    a = np.random.default_rng(1).random(64, dtype=np.float32)
    assert np.isclose(scaling.compute_kernel(a, 3), 3 * float((a * a).sum()), rtol=1e-5)
    nxt = scaling.random_cycle(500, seed=2)
    i = 7
    for _ in range(123):
        i = int(nxt[i])
    assert scaling.chase_kernel(nxt, 7, 123) == i


def test_measure_one_thread_is_not_timed() -> None:
    assert scaling.measure(1) == {"threads": 1, "compute": 1.0, "latency": 1.0}


def test_ratio_is_n_for_parallel_work_and_1_for_serial_work() -> None:
    # calls that overlap fully (a sleep holds no lock) scale N x; calls that take turns on
    # one lock do not scale at all
    lock = threading.Lock()

    def serial() -> None:
        with lock:
            time.sleep(0.04)

    with ThreadPoolExecutor(3) as pool:
        assert 2.4 < scaling._ratio(lambda: time.sleep(0.04), 3, pool) < 3.3
        assert 0.8 < scaling._ratio(serial, 3, pool) < 1.15


def test_measure_two_threads_gives_speedups() -> None:
    got = scaling.measure(2)
    assert got["threads"] == 2
    for key in ("compute", "latency"):
        assert 0.2 < got[key] < 3.0, got  # N x alone / together: about 1 to N on a host


def test_provenance_line_shows_start_and_end() -> None:
    start = {"threads": 2, "compute": 1.28, "latency": 1.9}
    end = {"threads": 2, "compute": 1.81, "latency": 1.86}
    row = {"run_id": "r", "cpu_model": "cpu", "cpu_count": 2, "threads_all": 2,
           "thread_scaling": start, "packages": {}}  # fmt: skip
    header = {"command": "vecdb bench", "seconds": 1.0, "load_start": [0.1],
              "load_end": [0.2], "thread_scaling_end": end}  # fmt: skip
    lines = provenance_lines(row, header)
    host = [x for x in lines if x.startswith("- Host thread scaling")]
    assert host == [
        "- Host thread scaling (2 copies of a kernel at once vs one alone, "
        "`vecdb.bench.scaling`): at start compute-bound 1.28x, memory-latency-bound 1.90x; "
        "at end compute-bound 1.81x, memory-latency-bound 1.86x."
    ]
    assert lines[-1].startswith("- Python")


def test_provenance_without_a_measurement_has_no_line() -> None:
    row = {"run_id": "r", "cpu_model": "cpu", "cpu_count": 1, "threads_all": 1, "packages": {}}
    header = {"command": "vecdb bench", "seconds": 1.0, "load_start": [], "load_end": []}
    assert not any(x.startswith("- Host") for x in provenance_lines(row, header))
    row["thread_scaling"] = scaling.measure(1)
    assert not any(x.startswith("- Host") for x in provenance_lines(row, header))
