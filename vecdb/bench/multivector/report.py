"""Turns a multi-vector run's rows into a RESULTS.md section, the target lines and the plots.

Owns the presentation of one tier: provenance, the table of every setting (bytes per token,
fidelity vs exact MaxSim, effectiveness vs the labels with its change against exact, documents
fully scored, MaxSim work saved, latency p50 / p95 at each thread count, speed-up over the
exact reference), a line per target of issue 11 (met / missed, with the numbers), and Pareto
plots of recall@10 vs bytes per token and vs 1-thread latency. Sections go between the same
markers as the ANN report (`vecdb.bench.report.replace_section`). Must not measure anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vecdb.bench.datasets import slugify
from vecdb.bench.report import fmt, fmt_params, provenance_lines, relative_path, replace_section

Row = dict[str, Any]
D_TARGET = 128  # the byte budget is stated at d = 128
BYTES_AT_128 = 40.0
RECALL_TARGET, LABEL_LOSS, FULLY_SCORED, SPEEDUP, PRUNE_SAVED = 0.95, 0.02, 0.05, 5.0, 0.30
KNN = "token-knn-hnsw"


def _ok(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if "error" not in r and "skipped" not in r]


def _reference(rows: Sequence[Row]) -> Row | None:
    ok = _ok(rows)
    return next((r for r in ok if r.get("role") == "reference"), None) or next(
        (r for r in ok if r["system"] == "exact-numba"), None
    )


def label_change(row: Row) -> float:
    """Relative change of label nDCG@10 against exact MaxSim's (0.0 = the same)."""
    ex = float(row["exact_labels"]["ndcg_at_10"])
    return (float(row["label_ndcg_at_10"]) - ex) / ex if ex else 0.0


def speedup(row: Row, ref: Row | None, threads: int) -> float | None:
    """Reference p50 latency over this row's at `threads` (None when either is missing)."""
    key = f"latency_p50_{threads}t_ms"
    if ref is None or not row.get(key) or not ref.get(key):
        return None
    return float(ref[key]) / float(row[key])


def saved(row: Row) -> Any:
    """MaxSim work saved by pruning: the system's own counter (measured pairs over the scored
    documents) when it has one, else the configured share."""
    value = row.get("maxsim_work_saved")
    return value if value is not None else row.get("pruning_work_saved")


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.1f}%"


def _threads(rows: Sequence[Row]) -> list[int]:
    found = {int(k.split("_")[2][:-1]) for r in rows for k in r if k.startswith("latency_p50_")}
    return sorted(found)


def settings_table(rows: Sequence[Row]) -> list[str]:
    """Markdown lines: one per measured setting."""
    threads = _threads(rows)
    ref = _reference(rows)
    lat = " | ".join(f"p50 / p95 ms {t}t | x exact {t}t" for t in threads)
    head = (
        "| system | build | search | B/token (tiers) | R@10 | nDCG@10 vs exact | mass | cand. docs"
        " | cand. R@10"
        " | MRR@10 labels | nDCG@10 labels (vs exact) | fully scored | work saved counter / pruning | "
        f"{lat} | build s |"
    )
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in _ok(rows):
        tiers = ", ".join(f"{k} {v:.4g}" for k, v in r["bytes_per_token"].items())
        cells = [
            r["system"],
            fmt_params(r.get("build_params")),
            fmt_params(r.get("params")),
            f"{r['bytes_per_token_total']:.4g} ({tiers})",
            fmt(r.get("recall_at_10"), 3),
            fmt(r.get("ndcg_at_10_exact"), 3),
            fmt(r.get("mass_ratio"), 4),
            fmt(r.get("candidates"), 0),
            fmt(r.get("candidate_recall"), 3),
            fmt(r.get("label_mrr_at_10"), 3),
            f"{r['label_ndcg_at_10']:.3f} ({100 * label_change(r):+.1f}%)",
            _pct(r.get("fully_scored_frac")),
            f"{_pct(r.get('maxsim_work_saved'))} / {_pct(r.get('pruning_work_saved'))}",
        ]
        for t in threads:
            p50, p95 = r.get(f"latency_p50_{t}t_ms"), r.get(f"latency_p95_{t}t_ms")
            s = speedup(r, ref, t)
            cells += [f"{fmt(p50, 2)} / {fmt(p95, 2)}", "-" if s is None else f"{s:.1f}x"]
        cells.append(fmt(r.get("build_s"), 1))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _knn_at_recall(rows: Sequence[Row], recall: float, threads: int) -> Row | None:
    """The fastest token-kNN setting reaching `recall` (p50 at `threads`)."""
    key = f"latency_p50_{threads}t_ms"
    knn = [r for r in _ok(rows) if r["system"].startswith(KNN) and r["recall_at_10"] >= recall]
    return min(knn, key=lambda r: r.get(key, math.inf), default=None)


def target_lines(rows: Sequence[Row]) -> list[str]:
    """Markdown bullets: each target of issue 11 on the default pipeline, met or missed."""
    ok = _ok(rows)
    defaults = [r for r in ok if r.get("role") == "default"]
    if not defaults:
        return ['- No default-pipeline row (role "default") was measured: targets not checked.']
    ref = _reference(rows)
    d = int(defaults[0]["d"])
    budget = BYTES_AT_128 * d / D_TARGET
    out: list[str] = []
    for r in defaults:
        name = f"{r['system']} {fmt_params(r.get('params'))}"

        def line(met: bool, text: str, name: str = name) -> None:
            out.append(f"- **{'met' if met else 'missed'}** ({name}): {text}")

        line(
            r["recall_at_10"] >= RECALL_TARGET,
            f"recall@10 vs exact {r['recall_at_10']:.3f} (>= {RECALL_TARGET})",
        )
        ch = label_change(r)
        line(
            ch >= -LABEL_LOSS,
            f"label nDCG@10 {r['label_ndcg_at_10']:.3f} vs exact {r['exact_labels']['ndcg_at_10']:.3f} = {100 * ch:+.1f}% (within -{100 * LABEL_LOSS:.0f}%)",
        )
        bt = float(r["bytes_per_token_total"])
        line(
            bt <= budget,
            f"{bt:.1f} B/token stored, read by search (<= 40 at d=128; {budget:.1f} at d={d})",
        )
        fs = r.get("fully_scored_frac")
        line(fs is not None and fs <= FULLY_SCORED, f"{_pct(fs)} of documents fully scored (<= 5%)")
        for t in _threads([r]):
            s = speedup(r, ref, t)
            line(
                s is not None and s >= SPEEDUP,
                f"{'-' if s is None else f'{s:.1f}x'} faster than {ref['system'] if ref else 'exact'} at {t} thread(s), p50 (>= 5x)",
            )
            knn = _knn_at_recall(rows, float(r["recall_at_10"]), t)
            key = f"latency_p50_{t}t_ms"
            if not any(x["system"].startswith(KNN) for x in ok):
                out.append(f"- not checked ({name}): no token-kNN rows in this run")
            elif knn is None:
                line(
                    True,
                    f"no token-kNN setting reaches recall {r['recall_at_10']:.3f} ({t} thread(s))",
                )
            else:
                line(
                    r[key] < knn[key],
                    f"p50 {r[key]:.2f} ms vs token-kNN {knn[key]:.2f} ms at recall >= {r['recall_at_10']:.3f} ({fmt_params(knn.get('params'))}, {t} thread(s))",
                )
    pruning = [r for r in ok if r.get("role") == "pruning" and saved(r) is not None]
    base = defaults[0]
    good = [
        r for r in pruning
        if saved(r) >= PRUNE_SAVED
        and r["label_ndcg_at_10"] >= base["label_ndcg_at_10"] * (1 - LABEL_LOSS)
    ]  # fmt: skip
    if not pruning:
        out.append('- Pruning / pooling: no row with role "pruning" and a work-saved counter.')
    elif good:
        best = max(good, key=saved)
        out.append(
            f"- **met** (pruning): {best['system']} {fmt_params(best.get('build_params'))} {fmt_params(best.get('params'))} saves {_pct(saved(best))} of MaxSim work at label nDCG@10 {best['label_ndcg_at_10']:.3f} vs {base['label_ndcg_at_10']:.3f} unpruned (>= 30% at <= 2% loss)"
        )
    else:
        best = max(pruning, key=saved)
        out.append(
            f"- **missed** (pruning): no setting saves >= 30% at <= 2% label-nDCG loss; the most saving, {best['system']} {fmt_params(best.get('build_params'))} {fmt_params(best.get('params'))}: {_pct(saved(best))} at {best['label_ndcg_at_10']:.3f} vs {base['label_ndcg_at_10']:.3f}"
        )
    return out


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, recall) points no other point beats on both (lower cost, higher recall),
    by increasing cost."""
    out: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or y > out[-1][1]:
            out.append((x, y))
    return out


def plot(rows: Sequence[Row], x_key: str, x_label: str, title: str, path: Path) -> None:
    """recall@10 vs `x_key` (log scale): every setting a point (a marker per system) and the
    Pareto frontier of all of them as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    systems: dict[str, list[Row]] = {}
    for r in _ok(rows):
        if r.get(x_key):
            systems.setdefault(r["system"], []).append(r)
    every: list[tuple[float, float]] = []
    for i, (name, rs) in enumerate(systems.items()):
        pts = [(float(r[x_key]), float(r["recall_at_10"])) for r in rs]
        every += pts
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="os^vD<>p*hX"[i % 11],
                   label=name, s=28, color=plt.get_cmap("tab20")(i % 20))  # fmt: skip
    front = frontier(every)
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto frontier")
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("recall@10 vs exact MaxSim")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def section_text(
    rows: Sequence[Row], header: Mapping[str, Any], plots: Sequence[tuple[str, Path]], md_dir: Path
) -> str:
    """The markdown of one tier's section."""
    first = rows[0] if rows else {}
    ex = first.get("exact_labels", {})
    out = [
        f"## {header.get('label') or header['dataset']}",
        "",
        *provenance_lines(first, header),
        f"- Data: tier {first.get('tier')}, {fmt(first.get('n_docs'))} documents, "
        f"{fmt(first.get('n_tokens'))} tokens x {first.get('d')} dims, {fmt(first.get('n_queries'))} "
        f"queries ({fmt(first.get('mean_query_tokens'), 1)} tokens on average), corpus sha256 "
        f"{str(first.get('corpus_sha256', '?'))[:12]}; exact MaxSim vs the labels: MRR@10 "
        f"{fmt(ex.get('mrr_at_10'), 3)}, nDCG@10 {fmt(ex.get('ndcg_at_10'), 3)}, R@10 "
        f"{fmt(ex.get('recall_at_10'), 3)}.",
        "- Fidelity vs exact MaxSim (float64): recall@10 tie-aware (1e-5), nDCG@10 with gain 10 - r"
        " at exact rank r, mass = sum of exact scores returned / of the exact top 10. Labels: each "
        "query's own docstring body. Latency: one call per query, wall, after "
        f"warm-up, on the first {first.get('latency_queries', '?')} queries, every setting "
        "alternated per query (a fresh seeded random order per query), p50 / p95 over queries of the median of "
        f'{first.get("latency_rounds", 1)} round(s); "x exact" = the '
        "exact reference's p50 / this p50 at the same threads. B/token: every tier search reads. "
        "Work saved: counter = the system's own (1 - query x document token pairs scored / all "
        "pairs of the same documents); pruning = 1 - kept query-token share x encoded / raw "
        "document tokens (what pruning and pooling remove).",
        "",
        "### Targets (issue 11)",
        "",
        *target_lines(rows),
        "",
        "### Every setting",
        "",
        *settings_table(rows),
    ]
    bad = [r for r in rows if "error" in r or "skipped" in r]
    if bad:
        out += ["", "Not measured:", ""]
        out += [
            f"- {r['system']} {fmt_params(r.get('build_params'))}: {r.get('error') or r.get('skipped')}"
            for r in bad
        ]
    out += ["", "### Plots", ""]
    for label, p in plots:
        out.append(f"![recall@10 vs {label}]({Path(relative_path(p, md_dir)).as_posix()})")
    return "\n".join(out) + "\n"


def write_mv_report(
    rows: Sequence[Row], results_md: Path, plots_dir: Path, header: Mapping[str, Any]
) -> list[Path]:
    """Write one tier's plots and RESULTS.md section; returns the files written."""
    slug = slugify(str(header.get("label") or header["dataset"]))
    plots: list[tuple[str, Path]] = []
    for key, label in (
        ("bytes_per_token_total", "bytes per token"),
        ("latency_p50_1t_ms", "p50 latency ms, 1 thread"),
    ):
        p = plots_dir / f"{slug}-recall-vs-{key.split('_')[0]}.png"
        plot(rows, key, label, f"{header['dataset']}: recall@10 vs {label}", p)
        plots.append((label, p))
    body = section_text(rows, header, plots, results_md.parent)
    results_md.parent.mkdir(parents=True, exist_ok=True)
    old = results_md.read_text() if results_md.is_file() else ""
    results_md.write_text(replace_section(old, slug, body))
    return [p for _l, p in plots] + [results_md]
