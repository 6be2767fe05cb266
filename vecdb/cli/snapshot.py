"""`vecdb snapshot create|list|restore|delete COLLECTION [SNAPSHOT]`: collection snapshots.

Owns the command only: it opens the target through the SDK (`vecdb.connect`: a data
directory embedded, or HOST:PORT of a server) and calls the `Client` snapshot methods, so
it works the same in both modes. Errors are printed as one line with exit code 1.
"""

from __future__ import annotations

import json
import sys
import time

import click

import vecdb
from vecdb.client import _is_remote
from vecdb.errors import VecdbError
from vecdb.types import SnapshotInfo

ACTIONS = ("create", "list", "restore", "delete")


def _row(info: SnapshotInfo) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created))
    return f"{info.name}  seq {info.seq}  {when}  {info.bytes / 2**20:.1f} MiB"


def _as_dict(info: SnapshotInfo) -> dict[str, object]:
    return {"name": info.name, "collection": info.collection, "seq": info.seq,
            "created": info.created, "bytes": info.bytes}  # fmt: skip


def run(client: vecdb.Client, action: str, collection: str, snapshot: str | None,
        as_json: bool) -> None:  # fmt: skip
    if action in ("restore", "delete") and snapshot is None:
        raise click.UsageError(f"'vecdb snapshot {action}' needs the SNAPSHOT name")
    if action in ("create", "list") and snapshot is not None:
        raise click.UsageError(f"'vecdb snapshot {action}' takes no SNAPSHOT name")
    if action == "create":
        info = client.create_snapshot(collection)
        click.echo(json.dumps(_as_dict(info)) if as_json else f"created {_row(info)}")
    elif action == "list":
        infos = client.list_snapshots(collection)
        if as_json:
            click.echo(json.dumps([_as_dict(i) for i in infos], indent=1))
        else:
            for i in infos:
                click.echo(_row(i))
            if not infos:
                click.echo(f"(no snapshots of {collection!r})")
    elif action == "restore":
        assert snapshot is not None
        client.restore_snapshot(collection, snapshot)
        click.echo(f"restored {collection!r} from snapshot {snapshot!r}")
    else:
        assert snapshot is not None
        client.delete_snapshot(collection, snapshot)
        click.echo(f"deleted snapshot {snapshot!r} of {collection!r}")


@click.command("snapshot")
@click.argument("action", type=click.Choice(ACTIONS))
@click.argument("collection")
@click.argument("snapshot", required=False)
@click.option(
    "--target",
    default="./vecdb-data",
    show_default=True,
    help="A data directory (embedded; a path such as ./vecdb-data) or HOST:PORT of a server.",
)
@click.option(
    "--api-key", default=None, envvar="VECDB_API_KEY", help="API key (remote targets; env "
    "VECDB_API_KEY).",
)  # fmt: skip
@click.option("--tls-ca", default=None, help="CA file to verify the server (enables TLS).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def snapshot(
    action: str,
    collection: str,
    snapshot: str | None,
    target: str,
    api_key: str | None,
    tls_ca: str | None,
    as_json: bool,
) -> None:
    """Create, list, restore or delete snapshots of COLLECTION.

    \b
    vecdb snapshot create docs            a consistent snapshot, taken while writes go on
    vecdb snapshot list docs
    vecdb snapshot restore docs NAME      replace docs with the snapshot NAME
    vecdb snapshot delete docs NAME
    """
    try:
        remote = _is_remote(target)
        client = vecdb.connect(target, api_key=api_key, tls=tls_ca) if remote else (
            vecdb.connect(target)
        )  # fmt: skip
    except VecdbError as exc:
        click.echo(f"vecdb snapshot: cannot open {target}: {exc}", err=True)
        sys.exit(1)
    try:
        with client:
            run(client, action, collection, snapshot, as_json)
    except VecdbError as exc:
        click.echo(f"vecdb snapshot: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
