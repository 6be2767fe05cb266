"""`vecdb.bench.spann_defaults` on a small synthetic set: each config is compared at the
smallest `max_postings` that reaches the target recall (the bisection's answer is minimal),
the rows carry the index's own request counts (rerank rows only with a store), and a kept
work directory is re-measured without a build."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numba

from vecdb.bench import spann_defaults


def _args(tmp_path: Path, **kw: object) -> argparse.Namespace:
    given = {
        "dataset": "synthetic:6000:16:7",
        "n": 0,
        "queries": 60,
        "configs": ["f16", "i8-400"],
        "target": 0.99,
        "rerank_k": 16,
        "max_m": 256,
        "rounds": 1,
        "cold": True,
        "work": str(tmp_path),
        "reuse": None,
        "no_rss": True,
    }
    return argparse.Namespace(**(given | kw))


def test_configs_are_compared_at_their_smallest_postings_for_the_target(tmp_path: Path) -> None:
    threads = numba.get_num_threads()
    out = spann_defaults.run(_args(tmp_path))
    assert numba.get_num_threads() == threads  # its 1-thread passes leave the count as found
    assert list(tmp_path.iterdir()) == []  # the work directory is removed
    for name in ("f16", "i8-400"):
        m, seen = out["max_postings"][name], out[f"{name}:recall_by_m"]
        assert seen[m] >= 0.99
        assert m == 1 or seen[m - 1] < 0.99  # bisection: the one below it was measured short
        warm = out["median"][f"warm:{name}"]
        assert warm["recall@10"] == seen[m]  # the rounds ran at the calibrated setting
        assert warm["blocks_per_query"] > 0 and warm["qps_cpu_1t"] > 0
        assert warm["rerank_rows_per_query"] == (16 if name == "i8-400" else 0)
        assert out["median"][f"cold16:{name}"]["kb_per_query"] > 0
    assert out["f16:build"]["store_x_raw"] == 0 < out["i8-400:build"]["store_x_raw"]
    assert out["i8-400:build"]["heads"] < out["f16:build"]["heads"]  # half the head fraction
    assert set(out["ratio_to_f16"]) == {"warm:i8-400", "cold16:i8-400", "cold1:i8-400"}


def test_a_kept_work_directory_is_measured_again_without_a_build(tmp_path: Path) -> None:
    first = spann_defaults.run(_args(tmp_path, cold=False))
    assert list(tmp_path.iterdir()) == []  # the work directory is removed
    kept = tmp_path / "kept"  # built into and kept by the first run, reused by the second
    built = spann_defaults.run(_args(tmp_path, cold=False, reuse=str(kept)))
    assert built["f16:build"]["build_s"] > 0
    again = spann_defaults.run(_args(tmp_path, cold=False, reuse=str(kept)))
    assert (kept / "f16").is_dir() and (kept / "i8-400").is_dir()
    assert again["max_postings"] == first["max_postings"]  # same data, same seed, same builds
    assert again["f16:build"]["build_s"] != again["f16:build"]["build_s"]  # NaN: not built
    # the fresh-process memory probe opens the kept index in a child and reports a growth
    params = spann_defaults.CONFIGS["i8-400"] | {"io": "mmap"}
    rss = spann_defaults._rss(kept / "i8-400", 16, "l2", params, kept / "q.npy")
    assert math.isfinite(rss)
