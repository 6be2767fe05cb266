"""`vecdb serve --role shard`: a normal node that also follows the etcd catalog.

It opens the data directory, starts the catalog's `ShardSync` (collections created or dropped
through a router are applied here, also those changed while this shard was down), and serves
the node's gRPC API unchanged: the router talks to it as a client would. Direct calls of
client-side routing (`x-vecdb-route`) are checked against the catalog first
(`vecdb.cluster.shard_routes`). The shard's index
is `cluster.shard_index`, or the trailing `-<n>` of `$HOSTNAME` (a StatefulSet names its pods
`<name>-0`, `<name>-1`, ...). Owns the process wiring of a shard only.
"""

from __future__ import annotations

import logging
import os
import re

from vecdb.errors import InvalidArgument
from vecdb.server.app import VecdbServer, pin_blas_threads, run_until_signal, setup_logging
from vecdb.server.config import ServerConfig

log = logging.getLogger("vecdb.shard")
_TRAILING_INDEX = re.compile(r"-(\d+)$")


def shard_index(config: ServerConfig, env: dict[str, str] | None = None) -> int:
    """`cluster.shard_index`, or the trailing -<n> of $HOSTNAME when it is -1."""
    if config.cluster.shard_index >= 0:
        return config.cluster.shard_index
    host = (os.environ if env is None else env).get("HOSTNAME", "")
    m = _TRAILING_INDEX.search(host)
    if m is None:
        raise InvalidArgument(
            f"cluster.shard_index is not set and HOSTNAME={host!r} does not end in -<n>",
            field="cluster.shard_index",
        )
    return int(m.group(1))


def serve_shard(config: ServerConfig) -> int:
    """Run a shard in the foreground until SIGTERM/SIGINT, then shut down gracefully."""
    from vecdb.cluster.catalog import EtcdCatalog
    from vecdb.cluster.shard_routes import RouteCheck, RouteChecked
    from vecdb.cluster.shard_sync import ShardSync
    from vecdb.engine import Database

    setup_logging(config.log.level, config.log.json)
    log.info("config", extra={"config": config.redacted()})
    pin_blas_threads(config.server.blas_threads)
    index = shard_index(config)
    db = Database(config.server.data, settings=config.engine.settings())
    catalog = EtcdCatalog(config.cluster.etcd, prefix=config.cluster.prefix)
    sync = ShardSync(db, catalog, index)
    try:
        sync.start()
        check = RouteCheck(catalog, index)  # direct calls of client-side routing
        server = VecdbServer(config, db=db, wrap=lambda s: RouteChecked(s, check)).start()
    except BaseException:
        sync.stop()
        catalog.close()
        db.close()
        raise
    log.info("shard", extra={"shard_index": index, "etcd": config.cluster.etcd})

    def stop() -> None:
        server.stop()
        sync.stop()
        catalog.close()
        db.close()

    return run_until_signal(stop)
