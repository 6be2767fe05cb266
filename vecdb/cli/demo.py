"""`vecdb demo`: load a seeded synthetic set through the embedded SDK and check recall.

Owns nothing but a walkthrough a new user can run: create a collection in a data directory,
upsert in batches with a progress bar, optimize, search, and compare with exact search.
Every option is checked before anything is generated (click ranges from `vecdb.config`);
a directory that cannot be opened (e.g. held by a running server) is one line on stderr and
exit code 1, not a traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

import vecdb
from vecdb import config as caps
from vecdb.bench.datasets import synthetic
from vecdb.errors import NotFound, VecdbError
from vecdb.kernels.scan import exact_topk
from vecdb.types import IndexKind


@click.command()
@click.option(
    "--data",
    "data_dir",
    default="./vecdb-data",
    show_default=True,
    help="Data directory (created if missing).",
)
@click.option(
    "--n", "n", type=click.IntRange(1), default=50_000, show_default=True, help="Vectors to load."
)
@click.option(
    "--dim",
    type=click.IntRange(caps.MIN_DIM, caps.MAX_DIM),
    default=64,
    show_default=True,
    help="Dimension.",
)
@click.option(
    "--queries",
    "nq",
    type=click.IntRange(1, caps.MAX_QUERIES),
    default=500,
    show_default=True,
    help="Queries to run (at most the n/20, 10 to 1,000, generated with the vectors).",
)
@click.option(
    "--k",
    type=click.IntRange(1, caps.MAX_K),
    default=10,
    show_default=True,
    help="Neighbours per query (at most --n).",
)
@click.option(
    "--index",
    type=click.Choice([k.value for k in IndexKind if k is not IndexKind.MULTIVECTOR]),
    default=None,
    help="Index kind [default: spann].",
)
@click.option(
    "--batch-size", type=click.IntRange(1, caps.MAX_BATCH), default=5_000, show_default=True
)
def demo(
    data_dir: str, n: int, dim: int, nq: int, k: int, index: str | None, batch_size: int
) -> None:
    """Load N seeded synthetic vectors into DATA, search them, print recall vs exact."""
    if k > n:  # checked before anything is generated or loaded
        raise click.BadParameter(f"{k} is more than the {n} vectors of --n", param_hint="'--k'")
    try:
        client = vecdb.connect(Path(data_dir))
    except VecdbError as exc:  # e.g. the directory is held by a running server
        click.echo(f"vecdb demo: cannot open {data_dir}: {exc}", err=True)
        sys.exit(1)
    try:
        run(client, data_dir, n, dim, nq, k, index, batch_size)
    except VecdbError as exc:
        click.echo(f"vecdb demo: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)


def run(client: vecdb.Client, data_dir: str, n: int, dim: int, nq: int, k: int,
        index: str | None, batch_size: int) -> None:  # fmt: skip
    """The walkthrough on an open client (closed at the end)."""
    base, queries, _ = synthetic(n, dim, seed=42)
    queries = queries[:nq]
    name = "demo"
    with client:
        try:
            client.drop_collection(name)
        except NotFound:
            pass
        info = client.create_collection(name, dim=dim, metric="l2", index=index)
        click.echo(f"data directory: {data_dir}; collection {name!r}: {info.index.value} index")
        t0 = time.perf_counter()
        with tqdm(total=n, unit="vec", desc="upsert") as bar:
            for lo in range(0, n, batch_size):
                hi = min(n, lo + batch_size)
                client.upsert(
                    name,
                    ids=list(range(lo, hi)),
                    vectors=base[lo:hi],
                    payloads=[{"row": i} for i in range(lo, hi)],
                )
                bar.update(hi - lo)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.optimize(name)
        opt_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = client.search(name, queries, k=k)
        search_s = time.perf_counter() - t0
        truth, _ = exact_topk(queries, base, "l2", k)
        hits = sum(
            len(set(a.tolist()) & set(b.tolist())) for a, b in zip(res.ids, truth, strict=False)
        )
        recall = hits / (len(queries) * k)
        one = client.search(name, queries[0], k=3, with_payload=True)
        click.echo(
            f"loaded {n:,} x {dim} in {load_s:.2f} s ({n / load_s:,.0f} vectors/s, "
            f"durable acks); optimize {opt_s:.2f} s"
        )
        click.echo(
            f"searched {len(queries)} queries in {search_s * 1e3:.1f} ms "
            f"({len(queries) / search_s:,.0f} QPS batch); recall@{k} vs exact: {recall:.4f}"
        )
        click.echo(
            f"first query's top 3: ids {one.ids[0].tolist()}, "
            f"payloads {one.payloads[0] if one.payloads else None}"
        )
        click.echo(f"count: {client.count(name):,}")
