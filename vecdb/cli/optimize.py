"""`vecdb optimize COLLECTION`: run a collection's pending index work now, with progress.

Owns the command: it asks the maintenance worker (embedded, on a data directory, or in a
server) for the collection's pending work without waiting, then follows the index state and
progress that `get_collection` reports with a progress bar until the index is ready, failed,
or the timeout passes. Never changes data itself.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from tqdm import tqdm

import vecdb
from vecdb.client import _is_remote
from vecdb.errors import VecdbError

POLL_SECONDS = 0.25  # how often the state is read
_BUSY = ("building", "indexing", "maintaining")


def job_error(stats: dict[str, Any]) -> str:
    """The failed index job's error in a collection's `stats`: a node's own, or through a
    router (`{"total": ..., "shards": {address: a node's stats}}`) each failed shard's,
    named by its address (the router's total has none: before, an empty reason)."""
    own = stats.get("index_status", {}).get("error")
    if own:
        return str(own)
    shards = stats.get("shards")
    found = [f"{addr}: {s['index_status']['error']}" for addr, s in (shards or {}).items()
             if isinstance(s, dict) and (s.get("index_status") or {}).get("error")]  # fmt: skip
    return "; ".join(found) or "(no reason reported)"


def follow(client: vecdb.Client, name: str, timeout: float | None, quiet: bool) -> int:
    """Ask for the work, then show state and progress until ready; return an exit code."""
    client.optimize(name, wait=False)
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = tqdm(total=100, unit="%", disable=quiet, bar_format="{desc} {bar} {n:.0f}% [{elapsed}]")
    seen_work = False
    try:
        while True:
            info = client.get_collection(name)
            state = info.index_state
            seen_work = seen_work or state in _BUSY
            bar.set_description_str(f"{name}: {state}, {info.buffered:,} buffered")
            bar.n = round(100 * (info.index_progress if state in _BUSY else 1.0), 1)
            bar.refresh()
            if state == "ready":
                bar.n = 100
                bar.refresh()
                break
            if state == "error":
                bar.close()
                err = job_error(client.stats(name))
                click.echo(f"vecdb optimize: {name}: the index job failed: {err}", err=True)
                return 1
            if deadline is not None and time.monotonic() > deadline:
                bar.close()
                click.echo(f"vecdb optimize: {name}: still {state} after {timeout} s", err=True)
                return 2
            time.sleep(POLL_SECONDS)
    finally:
        bar.close()
    if not quiet:
        spent = f", last build {info.last_build_seconds:.1f} s" if info.last_build_seconds else ""
        what = "documents" if info.kind.value == "multivector" else "points"  # what a row holds
        click.echo(f"{name}: ready, {info.indexed:,} {what} indexed{spent}")
    return 0


@click.command("optimize")
@click.argument("collection")
@click.option(
    "--target",
    default="./vecdb-data",
    show_default=True,
    help="A data directory (embedded) or HOST:PORT of a vecdb server.",
)
@click.option("--api-key", default=None, envvar="VECDB_API_KEY", help="API key (remote targets).")
@click.option("--tls-ca", default=None, help="CA file to verify the server (enables TLS).")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@click.option("--no-wait", is_flag=True, help="Only ask for the work; do not follow it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def optimize(
    collection: str,
    target: str,
    api_key: str | None,
    tls_ca: str | None,
    timeout: float | None,
    no_wait: bool,
    quiet: bool,
) -> None:
    """Build or update COLLECTION's index now and show the progress."""
    try:
        if _is_remote(target):
            client = vecdb.connect(target, api_key=api_key, tls=tls_ca)
        else:
            client = vecdb.connect(target)
    except VecdbError as exc:
        click.echo(f"vecdb optimize: cannot open {target}: {exc}", err=True)
        sys.exit(1)
    try:
        with client:
            if no_wait:
                if not _is_remote(target):
                    raise click.UsageError("--no-wait needs a server target (HOST:PORT)")
                client.optimize(collection, wait=False)
                code = 0
            else:
                code = follow(client, collection, timeout, quiet)
    except VecdbError as exc:
        click.echo(f"vecdb optimize: {exc}", err=True)
        code = 1
    sys.exit(code)
