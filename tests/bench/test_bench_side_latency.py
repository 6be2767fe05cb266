"""`vecdb.bench.side_latency`: the settings bracketing the target recall, the value at the
target between them, the alternation (every searcher timed in every block, in an order that
changes), and a small run of vecdb and hnswlib side by side on a synthetic set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numba
import pytest

from vecdb.bench import side_latency as sl


def test_bracket_takes_the_nearest_settings_on_either_side_of_the_target() -> None:
    pts = [(0.90, {"m": 16}), (0.97, {"m": 64}), (0.94, {"m": 32}), (0.96, {"m": 48})]
    assert sl.bracket(pts, 0.95) == [(0.94, {"m": 32}), (0.96, {"m": 48})]
    assert sl.bracket(pts, 0.96) == [(0.96, {"m": 48})]  # reached exactly: that one alone
    assert sl.bracket(pts, 0.80) == [(0.90, {"m": 16})]  # nothing below: an upper bound
    assert sl.bracket(pts, 0.99) == []  # nothing reaches it


def test_at_target_interpolates_in_recall() -> None:
    assert sl.at_target([(0.94, 0.20), (0.96, 0.30)], 0.95) == pytest.approx(0.25)
    assert sl.at_target([(0.96, 0.30), (0.94, 0.20)], 0.955) == pytest.approx(0.275)
    assert sl.at_target([(0.97, 0.4)], 0.95) == 0.4
    assert sl.at_target([(0.95, 0.4), (0.95, 0.3)], 0.95) == 0.3


def test_alternate_times_every_searcher_in_every_block_in_changing_orders() -> None:
    calls: list[tuple[str, int]] = []
    now = [0]

    def clock() -> int:
        return now[0]

    def searcher(name: str, cost_ns: int) -> tuple[object, object]:
        def prepare() -> None:
            calls.append((name, -1))

        def run(i: int) -> None:
            calls.append((name, i))
            now[0] += cost_ns

        return prepare, run

    out = sl.alternate(
        {"a": searcher("a", 1_000_000), "b": searcher("b", 3_000_000)},  # type: ignore[dict-item]
        n_queries=10,
        rounds=3,
        block=4,
        clock=clock,
    )
    assert set(out) == {"a", "b"}
    for key, ms in (("a", 1.0), ("b", 3.0)):
        assert len(out[key]) == 3  # one (p50, p99) per round
        assert all(p50 == pytest.approx(ms) and p99 == pytest.approx(ms) for p50, p99 in out[key])
    # per block each searcher is prepared, warmed on the block's first query, then runs the
    # block: 3 blocks (4 + 4 + 2 queries) x 3 rounds
    firsts = [i for i, c in enumerate(calls) if c[1] == -1]
    assert len(firsts) == 2 * 3 * 3
    timed = {k: sorted(i for n, i in calls if n == k and i >= 0) for k in "ab"}
    assert timed["a"] == timed["b"] == sorted(list(range(10)) * 3 + [0, 4, 8] * 3)
    first_of_block = [calls[i][0] for i in firsts[::2]]
    assert set(first_of_block) == {"a", "b"}  # the order changes between blocks


def test_a_small_run_times_vecdb_and_hnswlib_at_the_target(tmp_path: Path) -> None:
    config = {
        "systems": {
            "vecdb-spann": {"build": {"index": "spann"}, "sweep": {"max_postings": [2, 8, 32]}},
            "hnswlib": {"build": {"M": 8, "ef_construction": 40}, "sweep": {"ef": [10, 20, 80]}},
        }
    }
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config))
    threads = numba.get_num_threads()
    args = argparse.Namespace(
        dataset="synthetic:3000:16:7",
        systems="vecdb-spann,hnswlib",
        config=str(cfg),
        queries=40,
        target=0.9,
        rounds=2,
        block=10,
        seed=0,
        reuse=str(tmp_path / "work"),
    )
    logged: list[str] = []
    out = sl.run(args, logged.append)
    numba.set_num_threads(threads)
    for name in ("vecdb-spann", "hnswlib"):
        e = out["systems"][name]
        assert [s["params"] for s in e["sweep"]] == [
            {k: v} for k, vs in config["systems"][name]["sweep"].items() for v in vs
        ]
        recalls = [s["recall_at_10"] for s in e["sweep"]]
        assert recalls == sorted(recalls) and recalls[-1] >= 0.9
        timed = e["timed"]
        assert 1 <= len(timed) <= 2 and timed[-1]["recall_at_10"] >= 0.9
        assert all(len(t["rounds"]) == 2 and 0 < t["p50_ms"] <= t["p99_ms"] for t in timed)
        lo = min(t["p50_ms"] for t in timed)
        hi = max(t["p50_ms"] for t in timed)
        assert lo <= e["p50_at_target_ms"] <= hi
    assert out["systems"]["vecdb-spann"]["is_ours"] and not out["systems"]["hnswlib"]["is_ours"]
    text = sl.table(out)
    assert "| vecdb-spann / hnswlib |" in text and "| hnswlib / " not in text
    assert any("built in" in line for line in logged)
    # a second run loads what the first built
    logged.clear()
    again = sl.run(args, logged.append)
    numba.set_num_threads(threads)
    assert any("loaded from" in line for line in logged)
    assert [s["recall_at_10"] for s in again["systems"]["hnswlib"]["sweep"]] == [
        s["recall_at_10"] for s in out["systems"]["hnswlib"]["sweep"]
    ]
    # other build parameters in the config: that system is built again, the other loaded
    config["systems"]["hnswlib"]["build"] = {"M": 12, "ef_construction": 40}
    cfg.write_text(json.dumps(config))
    logged.clear()
    sl.run(args, logged.append)
    numba.set_num_threads(threads)
    assert any(line.startswith("hnswlib: built in") for line in logged)
    assert any(line.startswith("vecdb-spann: loaded from") for line in logged)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--rounds", "0"),
        ("--block", "-3"),
        ("--queries", "0"),
        ("--target", "1.5"),
        ("--rounds", "x"),
        ("--target", "nan"),
        ("--target", "high"),
    ],
)
def test_bad_options_are_refused_by_name(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        sl.main([option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    # the option, what it must be and what was given (not argparse's "invalid int value")
    assert option in err and repr(value) in err
    assert ("positive integer" if option != "--target" else "recall in (0, 1]") in err


def test_table_takes_ours_from_the_system_not_its_name() -> None:
    def entry(ours: bool, p50: float) -> dict[str, object]:
        timed = [{"params": {"x": 1}, "recall_at_10": 0.96, "p50_ms": p50, "p99_ms": 2 * p50}]
        return {
            "is_ours": ours,
            "timed": timed,
            "p50_at_target_ms": p50,
            "p99_at_target_ms": 2 * p50,
        }

    out = {"target": 0.95, "systems": {"mine": entry(True, 0.3), "vecdb-peer": entry(False, 0.2)}}
    text = sl.table(out)
    assert "| mine / vecdb-peer | 1.50x | 1.50x |" in text
    assert "| vecdb-peer / " not in text
