"""Pareto frontiers, interpolation at recall targets and RESULTS.md sections."""

from __future__ import annotations

import pytest

from vecdb.bench.report import pareto, qps_at_recall, ratio_table, replace_section
from vecdb.bench.systems import expand_sweep, make_system, parse_systems, variants_of
from vecdb.errors import InvalidArgument


def test_pareto_drops_dominated_points() -> None:
    """A point with lower recall and lower QPS than another is not on the frontier."""
    pts = [(0.8, 100.0), (0.9, 50.0), (0.85, 40.0), (0.99, 10.0)]
    assert pareto(pts) == [(0.8, 100.0), (0.9, 50.0), (0.99, 10.0)]


def test_qps_is_interpolated_between_neighbouring_settings() -> None:
    """At a target between two settings the QPS is linear in recall between them."""
    pts = [(0.8, 100.0), (0.9, 50.0), (0.99, 10.0)]
    assert qps_at_recall(pts, 0.85) == pytest.approx(75.0)
    assert qps_at_recall(pts, 0.9) == pytest.approx(50.0)
    assert qps_at_recall(pts, 0.5) == 100.0
    assert qps_at_recall(pts, 0.995) is None


def test_ratio_table_divides_ours_by_each_peer() -> None:
    """The vecdb / peer table shows ours over peer at each target."""
    rows = [
        {"system": "vecdb-flat", "is_ours": True, "recall_at_10": 1.0, "q": 300.0},
        {"system": "exact", "is_ours": False, "recall_at_10": 1.0, "q": 100.0},
    ]
    lines = ratio_table(rows, "q")
    assert lines[-1] == "| vecdb-flat / exact | 3.00x | 3.00x | 3.00x |"


def test_replace_section_keeps_text_outside_markers() -> None:
    """Rerunning a dataset replaces its section only."""
    doc = replace_section("", "a", "first")
    doc = replace_section(doc + "\nhand-written notes\n", "b", "other")
    doc = replace_section(doc, "a", "second")
    assert "second" in doc and "first" not in doc
    assert "hand-written notes" in doc and "other" in doc
    assert doc.startswith("# vecdb benchmark results")


def test_sweep_grid_and_system_aliases() -> None:
    """A dict sweep is a grid; aliases expand in registry order; unknown names fail."""
    assert expand_sweep({"a": [1, 2], "b": [3]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    assert expand_sweep([{"x": 1}]) == [{"x": 1}]
    assert parse_systems("hnswlib,vecdb") == ["vecdb-flat", "vecdb-spann", "hnswlib"]
    with pytest.raises(InvalidArgument, match="unknown system"):
        parse_systems("milvus")


def test_config_variant_runs_its_base_under_its_own_name() -> None:
    """A config system with a base is listed after the base and reports its own name."""
    variants = variants_of({"ivf-big": {"base": "faiss-ivf", "build": {"nlist": 64}}, "exact": {}})
    assert variants == {"ivf-big": "faiss-ivf"}
    assert parse_systems("ivf-big,exact,faiss-ivf", variants) == ["exact", "faiss-ivf", "ivf-big"]
    system = make_system("ivf-big", "l2", 8, 10_000, {"nlist": 64}, base="faiss-ivf")
    assert system.name == "ivf-big" and system.build_params["nlist"] == 64
    with pytest.raises(InvalidArgument, match="base must be a registered system"):
        variants_of({"x": {"base": "milvus"}})
