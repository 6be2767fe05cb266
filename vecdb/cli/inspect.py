"""`vecdb inspect DIR`: describe a data directory without taking it over.

Owns a read-only look at a data directory: the manifest, the RocksDB catalog (opened
read-only, so it works while a server holds the directory), each collection's configuration,
point count and bytes on disk: allocated (st_blocks x 512) beside apparent sizes, which
differ for sparse files. `--verify` checks every file and exits 1 on damage. Never writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from vecdb.engine.database import MANIFEST_NAME
from vecdb.engine.inspect import describe, verify
from vecdb.errors import VecdbError


@click.command("inspect")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a summary.")
@click.option(
    "--verify",
    "check",
    is_flag=True,
    help="Check every file (RocksDB rows, index blocks, snapshots); exit 1 on damage.",
)
def inspect_cmd(data_dir: Path, as_json: bool, check: bool) -> None:
    """Describe the data directory DATA_DIR (read-only; safe while a server runs)."""
    if not (data_dir / MANIFEST_NAME).exists() and not (data_dir / "kv").is_dir():
        raise click.ClickException(f"{data_dir} is not a vecdb data directory (no {MANIFEST_NAME})")
    if check:
        _verify(data_dir, as_json)
        return
    try:
        info: dict[str, Any] = describe(data_dir)
    except VecdbError as exc:
        raise click.ClickException(f"{exc} (run with --verify for a per-file report)") from None
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    click.echo(
        f"{info['path']}: data format {info['data_format']}, "
        f"last sequence {info['seq']}, {info['allocated_bytes'] / 2**20:.1f} MiB allocated on "
        f"disk ({info['bytes_on_disk'] / 2**20:.1f} MiB apparent)"
    )
    for c in info["collections"]:
        waiting = c.get("unindexed", 0)
        state = f", {waiting:,} not yet indexed" if waiting else ", all indexed"
        what = "documents" if c["index"] == "multivector" else "points"  # what a row holds
        click.echo(
            f"  {c['name']}: {c['count']:,} {what}{state}, dim {c['dim']}, {c['metric']}, "
            f"index {c['index']}, index files {c['index_allocated_bytes'] / 2**20:.1f} MiB "
            f"allocated ({c['index_bytes'] / 2**20:.1f} MiB apparent)"
        )
        tenants = c.get("tenants")
        if tenants is not None:  # a multi-tenant collection
            click.echo(f"    {len(tenants)} tenants")
            for t in tenants:
                extra = (
                    f", dropping ({t['progress']:.0%} cleaned)" if t["state"] != "active" else ""
                )
                seen = "documents" if what == "documents" else "vectors"
                click.echo(
                    f"      {t['name']}: {t['vectors']:,} {seen}, {t['owned']:,} owned{extra}"
                )
    if not info["collections"]:
        click.echo("  (no collections)")


def _verify(data_dir: Path, as_json: bool) -> None:
    """Print one line per file checked; exit 1 if any is damaged."""
    result = verify(data_dir)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        for f in result["files"]:
            click.echo(f"{'ok     ' if f['ok'] else 'DAMAGED'} {f['file']}: {f['detail']}")
        bad = sum(not f["ok"] for f in result["files"])
        click.echo(f"{len(result['files'])} files checked, {bad} damaged")
    if not result["ok"]:
        raise SystemExit(1)
