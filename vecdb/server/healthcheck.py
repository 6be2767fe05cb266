"""`python -m vecdb.server.healthcheck`: exit 0 if a vecdb server reports SERVING, 1 if not.

The container health check (deploy/Dockerfile) and scripts use it; it asks the standard
`grpc.health.v1.Health/Check` for the `vecdb.v1.VectorDB` service, so it sees what Kubernetes'
native gRPC probes see. With `--ca` it connects over TLS. Imports nothing but grpc.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE = "vecdb.v1.VectorDB"


def check(address: str, ca: str | None = None, timeout: float = 3.0) -> str:
    """The serving status name reported for `SERVICE` at `address`, or the gRPC error code."""
    if ca:
        creds = grpc.ssl_channel_credentials(Path(ca).read_bytes())
        channel = grpc.secure_channel(address, creds)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=timeout
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, check once, print the status, return the exit code."""
    port = os.environ.get("VECDB__SERVER__PORT", "7700")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=f"127.0.0.1:{port}", help="host:port to ask")
    parser.add_argument("--ca", default=None, help="CA (PEM) to verify a TLS server with")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        status = check(args.address, args.ca, args.timeout)
    except OSError as exc:  # a missing or unreadable --ca: a line, not a traceback
        print(f"cannot read --ca {args.ca}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
