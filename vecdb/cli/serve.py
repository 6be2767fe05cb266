"""`vecdb serve`: run the gRPC server over a data directory until SIGTERM or SIGINT.

Owns only the command line: it layers explicit flags over the config file and `VECDB__*`
environment (see `vecdb.server.config`), checks that the data directory is (or can become) a
directory, and hands the result to `vecdb.server.app.serve` (or, by `--role`, to the
cluster's router or shard).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from vecdb.errors import VecdbError


@click.command()
@click.option("--data", "data_dir", default=None, help="Data directory [default: ./vecdb-data].")
@click.option("--host", default=None, help="Bind address [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="gRPC port, 0 for any [default: 7700].")
@click.option("--metrics-port", type=int, default=None,
              help="Prometheus /metrics port, 0 for any [default: 7701].")  # fmt: skip
@click.option("--no-metrics", is_flag=True, help="Do not start the metrics exporter.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML or JSON config file (sections server, limits, metrics, auth with [[auth.keys]], "
    "quotas, tls, log, engine; every key: deploy/vecdb.example.toml).",
)
@click.option(
    "--api-key",
    default=None,
    envvar="VECDB_API_KEY",
    help="Admin API key (also VECDB_API_KEY); other keys ([[auth.keys]]) go in the config file.",
)
@click.option("--tls-cert", default=None, help="Server certificate (PEM) to enable TLS.")
@click.option("--tls-key", default=None, help="Server private key (PEM).")
@click.option(
    "--tls-client-ca", default=None, help="CA (PEM) that client certificates need (mTLS)."
)
@click.option("--log-level", default=None, help="debug, info, warning or error [default: info].")
@click.option("--role", type=click.Choice(["single", "shard", "router"]), default=None,
              help="single node, shard of a cluster, or router [default: single].")  # fmt: skip
@click.option("--etcd", default=None, help="Catalog endpoints host:port[,host:port...].")
@click.option("--shards", default=None, help="Router: shard addresses host:port,host:port,...")
@click.option("--shard-index", type=int, default=None,
              help="Shard: its index [default: the trailing -<n> of $HOSTNAME].")  # fmt: skip
def serve(
    data_dir: str | None, host: str | None, port: int | None, metrics_port: int | None,
    no_metrics: bool, config_file: str | None, api_key: str | None, tls_cert: str | None,
    tls_key: str | None, tls_client_ca: str | None, log_level: str | None, role: str | None,
    etcd: str | None, shards: str | None, shard_index: int | None,
) -> None:  # fmt: skip
    """Serve a data directory over gRPC (health checks, Prometheus metrics, and gRPC
    reflection if turned on: `reflection = true` under [server] in --config, or
    VECDB__SERVER__REFLECTION=true); or, with --role router, route to the shards of a cluster
    (no data directory)."""
    from vecdb.engine.database import make_data_dir
    from vecdb.server.app import serve as serve_single
    from vecdb.server.config import load_config

    flags: dict[str, dict[str, Any]] = {
        "server": {"data": data_dir, "host": host, "port": port},
        "metrics": {"port": metrics_port, "enabled": False if no_metrics else None},
        "auth": {"admin_key": api_key},
        "tls": {"cert": tls_cert, "key": tls_key, "client_ca": tls_client_ca},
        "log": {"level": log_level},
        "cluster": {"role": role, "etcd": etcd, "shards": shards, "shard_index": shard_index},
    }
    overrides = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in flags.items()}
    try:
        config = load_config(config_file, overrides=overrides)
        if config.cluster.role != "router":
            make_data_dir(Path(config.server.data))  # before anything opens a file in it
        run = serve_single
        if config.cluster.role == "router":
            from vecdb.cluster.router_app import serve_router as run
        elif config.cluster.role == "shard":
            from vecdb.cluster.shard_node import serve_shard as run
        code = run(config)
    except VecdbError as exc:
        click.echo(f"vecdb serve: {exc}", err=True)
        sys.exit(2)
    sys.exit(code)
