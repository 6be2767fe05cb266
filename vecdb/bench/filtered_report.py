"""Turns a filtered run's JSONL rows into its RESULTS.md section and its recall-vs-QPS plot.

Owns the presentation of `vecdb bench --filter-selectivity`: per selectivity and system, the
fastest measured setting with recall@10 >= the target (0.95; no interpolation: a filtered
sweep is coarse and the claim is "this setting reached it"), or the best recall reached if
none did; the vecdb / peer ratios at the target; every setting; one PNG with a panel per
selectivity. The section goes between the same markers as `vecdb.bench.report` uses, so a
rerun replaces only it. Must not measure anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vecdb.bench.datasets import slugify
from vecdb.bench.filtered_run import TARGET_RECALL
from vecdb.bench.report import (
    fmt,
    fmt_params,
    pareto,
    provenance_lines,
    relative_path,
    replace_section,
    run_notes,
)

Row = dict[str, Any]
QPS_KEYS = (("qps_1t_cpu", "1 thread, CPU-time QPS"), ("qps_all_wall", "all threads, wall QPS"))


def _cases(rows: Sequence[Row]) -> dict[float, dict[str, list[Row]]]:
    """selectivity (descending) -> system (row order) -> its rows."""
    out: dict[float, dict[str, list[Row]]] = {}
    for row in rows:
        if "error" not in row:
            out.setdefault(float(row["selectivity"]), {}).setdefault(row["system"], []).append(row)
    return dict(sorted(out.items(), key=lambda kv: -kv[0]))


def best_at_target(rs: Sequence[Row], key: str, target: float = TARGET_RECALL) -> Row | None:
    """The setting with the highest `key` QPS among those with recall@10 >= target."""
    ok = [r for r in rs if r["recall_at_10"] >= target and r.get(key) is not None]
    return max(ok, key=lambda r: r[key]) if ok else None


def _pct(s: float) -> str:
    return f"{100 * s:g}%"


def target_table(rows: Sequence[Row], target: float = TARGET_RECALL) -> list[str]:
    """Markdown lines: per selectivity and system, QPS of the fastest setting reaching target."""
    lines = [
        f"| selectivity | matching points | system | QPS 1t CPU @ >= {target:.2f} | setting "
        f"| QPS all-threads wall @ >= {target:.2f} | setting | best recall@10 | at |",
        "|---" * 9 + "|",
    ]
    for sel, systems in _cases(rows).items():
        for name, rs in systems.items():
            best = max(rs, key=lambda r: r["recall_at_10"])
            cells = [_pct(sel), f"{rs[0]['n_matching']:,}", name]
            for key, _label in QPS_KEYS:
                hit = best_at_target(rs, key, target)
                if hit is None:
                    cells += [f"never (best {best['recall_at_10']:.4f})", "-"]
                else:
                    cells += [fmt(hit[key]), fmt_params(hit["params"])]
            cells += [f"{best['recall_at_10']:.4f}", fmt_params(best["params"])]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def ratio_table(rows: Sequence[Row], target: float = TARGET_RECALL) -> list[str]:
    """Markdown lines: ours / peer 1-thread CPU QPS at the target, per selectivity."""
    cases = _cases(rows)
    names = list(dict.fromkeys(n for systems in cases.values() for n in systems))
    first = {n: next(rs[0] for s in cases.values() for m, rs in s.items() if m == n) for n in names}
    ours = [n for n in names if first[n].get("is_ours")]
    peers = [n for n in names if not first[n].get("is_ours")]
    if not ours or not peers:
        return ["(needs at least one vecdb system and one peer with results)"]
    pairs = [(a, b) for a in ours for b in peers]
    lines = ["| selectivity | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |"]
    lines.append("|---" * (len(pairs) + 1) + "|")
    for sel, systems in cases.items():
        cells = []
        for a, b in pairs:
            ha = best_at_target(systems.get(a, []), "qps_1t_cpu", target)
            hb = best_at_target(systems.get(b, []), "qps_1t_cpu", target)
            if ha is not None and hb is not None and hb["qps_1t_cpu"]:
                cells.append(f"{ha['qps_1t_cpu'] / hb['qps_1t_cpu']:.2f}x")
            else:
                cells.append("-" if ha is None else "(peer never)")
        lines.append(f"| {_pct(sel)} | " + " | ".join(cells) + " |")
    return lines


def settings_table(rows: Sequence[Row]) -> list[str]:
    """Markdown lines: one per measured (selectivity, system, setting)."""
    cols = ["selectivity", "system", "params", "recall@1", "recall@10", "non-matching ids",
            "QPS 1t CPU", "QPS 1t wall", "QPS all wall", "p50 ms", "p99 ms"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for sel, systems in _cases(rows).items():
        for rs in systems.values():
            for r in rs:
                cells = [
                    _pct(sel),
                    r["system"],
                    fmt_params(r["params"]),
                    f"{r['recall_at_1']:.4f}",
                    f"{r['recall_at_10']:.4f}",
                    str(r.get("non_matching", "-")),
                    fmt(r.get("qps_1t_cpu")),
                    fmt(r.get("qps_1t_wall")),
                    fmt(r.get("qps_all_wall")),
                    fmt(r.get("latency_p50_ms"), 3),
                    fmt(r.get("latency_p99_ms"), 3),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(rows: Sequence[Row], title: str, path: Path) -> None:
    """One panel per selectivity: recall@10 vs 1-thread CPU QPS (log), each system's frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = _cases(rows)
    n = max(1, len(cases))
    cols = min(n, 2)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 4.2 * nrows), dpi=100, squeeze=False)
    for ax, (sel, systems) in zip(axes.flat, cases.items(), strict=False):
        for i, (name, rs) in enumerate(systems.items()):
            pts = [(r["recall_at_10"], r["qps_1t_cpu"]) for r in rs]
            front = pareto(pts)
            ours = bool(rs[0].get("is_ours"))
            ax.plot([p[0] for p in front], [p[1] for p in front], marker="os^vD<>"[i % 7],
                    linewidth=2.5 if ours else 1.2, label=name + (" (ours)" if ours else ""))  # fmt: skip
        ax.axvline(TARGET_RECALL, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_title(f"selectivity {_pct(sel)} ({next(iter(systems.values()))[0]['n_matching']:,})")
        ax.set_xlabel("recall@10 (filtered, tie-aware)")
        ax.set_ylabel("QPS, 1 thread, CPU time")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(cases) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def section_text(
    rows: Sequence[Row], header: Mapping[str, Any], plot_path: Path, md_dir: Path
) -> str:
    """The markdown of one filtered run's section."""
    first = next((r for r in rows if "error" not in r), rows[0] if rows else {})
    index = "with" if first.get("payload_index") else "without"
    out = [
        f"## {header['label']}",
        "",
        *provenance_lines(first, header),
        f"- Data: {header['dataset']}, {first.get('n', 0):,} base x {first.get('d', '?')} dims, "
        f"{first.get('n_queries', 0):,} queries, metric {first.get('metric', '?')}, k=10.",
        f"- Payload (seed {first.get('filter_seed', '?')}): field sX of point i = a seeded "
        "permutation of the rows modulo X, so selectivity 1/X is the equality filter "
        '{"sX": 0}, the same for every query. vecdb gets the payload and the filter '
        f"({index} payload indexes); faiss an IDSelectorBitmap of the matching rows in "
        "SearchParameters(IVF); hnswlib a filter function (a list's __getitem__).",
        "- Recall@10 against the exact top-10 among the matching points (numpy brute force, "
        "tie-aware); an id that does not match the filter never counts (column "
        '"non-matching ids"). QPS as in the unfiltered runs: 1 thread = queries / median '
        "process-CPU seconds of one batch call; all threads = wall clock. Each sweep stops "
        f"after the first setting reaching recall@10 >= {first.get('stop_recall', '?')}.",
        "",
        f"### QPS at recall@10 >= {TARGET_RECALL:.2f} (the fastest measured setting)",
        "",
        *target_table(rows),
        "",
        f"### vecdb / peer at recall@10 >= {TARGET_RECALL:.2f} (1 thread, CPU-time QPS)",
        "",
        *ratio_table(rows),
        "",
        "### Every setting",
        "",
        *settings_table(rows),
    ]
    out += run_notes(
        rows, Path(relative_path(plot_path, md_dir)).as_posix(), "recall@10 vs QPS per selectivity"
    )
    return "\n".join(out) + "\n"


def write_filtered_report(
    rows: Sequence[Row], results_md: Path, plots_dir: Path, header: Mapping[str, Any]
) -> list[Path]:
    """Write the plot and this run's RESULTS.md section; returns the files written."""
    slug = slugify(str(header["label"]))
    path = plots_dir / f"{slug}-qps-1t-cpu.png"
    plot(rows, f"{header['dataset']}: filtered recall@10 vs QPS", path)
    body = section_text(rows, header, path, results_md.parent)
    results_md.parent.mkdir(parents=True, exist_ok=True)
    old = results_md.read_text() if results_md.is_file() else ""
    results_md.write_text(replace_section(old, slug, body))
    return [path, results_md]
