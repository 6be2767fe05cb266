"""The multi-vector bench's latency pass: every setting timed alternated per query, in a fresh
order per query, medians over rounds, and a failing setting reported without losing the others."""

from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.bench.multivector.run import Setting, latency
from vecdb.bench.multivector.systems import Hits, MVSystem


class FakeData:
    n_queries = 5

    def query(self, j: int) -> np.ndarray:
        return np.full((2, 4), j, np.float32)


class Recorder(MVSystem):
    """Appends (its name, query number) to a shared log per call; fails on `fail_on`."""

    def __init__(self, name: str, log: list[tuple[str, int]], fail_on: int = -1) -> None:
        self.name, self.log, self.fail_on = name, log, fail_on

    def search(self, q: np.ndarray, k: int, params: dict[str, Any]) -> Hits:
        j = int(q[0, 0])
        if j == self.fail_on:
            raise RuntimeError("boom")
        self.log.append((self.name, j))
        return Hits(np.zeros(k, np.int64), None, 0)


def test_settings_alternate_per_query_in_varying_order() -> None:
    log: list[tuple[str, int]] = []
    names = ["a", "b", "c"]
    settings = [Setting(Recorder(n, log), {}, {}) for n in names]
    out = latency(settings, FakeData(), n=4, threads=1, rounds=6)  # type: ignore[arg-type]
    timed = log[3 * 3 :]  # after 3 warm-up queries x 3 settings
    assert len(timed) == 6 * 4 * 3
    before: dict[str, set[str]] = {n: set() for n in names}
    for g in range(24):  # each query: every setting once, back to back
        group = timed[3 * g : 3 * g + 3]
        assert sorted(n for n, _ in group) == names
        assert len({j for _, j in group}) == 1
        assert group[0][1] == g % 4
        for (a, _), (b, _) in zip(group, group[1:], strict=False):
            before[b].add(a)
    assert all(len(v) == 2 for v in before.values())  # no fixed predecessor
    for row in out:
        assert (
            row["latency_p50_1t_ms"] >= 0 and row["latency_p95_1t_ms"] >= row["latency_p50_1t_ms"]
        )
        assert 0 <= row["latency_cpu_p50_1t_ms"] <= row["latency_cpu_p95_1t_ms"]


def test_a_failing_setting_is_reported_and_the_others_go_on() -> None:
    log: list[tuple[str, int]] = []
    settings = [
        Setting(Recorder("ok", log), {}, {}),
        Setting(Recorder("bad", log, fail_on=1), {}, {}),
    ]
    out = latency(settings, FakeData(), n=4, threads=1, rounds=1)  # type: ignore[arg-type]
    assert "latency_p50_1t_ms" in out[0]
    assert out[1] == {"latency_error_1t": "RuntimeError: boom"}
    assert sum(1 for n, _ in log if n == "ok") == 3 + 4
    assert all(j != 1 and j < 2 for n, j in log if n == "bad")  # left the pass at query 1
