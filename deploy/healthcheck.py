"""Container health probe: exit 0 when the local vecdb server reports SERVING, 1 otherwise.

Copied into the image by deploy/Dockerfile (HEALTHCHECK). It asks the standard
`grpc.health.v1.Health/Check` for `vecdb.v1.VectorDB` on 127.0.0.1 and the configured port,
over the same kind of channel a client would use:
- plaintext, unless the server has TLS (`VECDB__TLS__CERT` set);
- with TLS, trusting `VECDB_HEALTHCHECK_CA` if set, else the server's own certificate chain
  file (works for a self-signed certificate or a chain file that ends with its CA), and
  checking the name `VECDB_HEALTHCHECK_SERVER_NAME` (default "localhost") in the certificate,
  since the probe connects to 127.0.0.1 rather than the public name;
- with mutual TLS (`VECDB__TLS__CLIENT_CA` set), presenting `VECDB_HEALTHCHECK_CERT` and
  `VECDB_HEALTHCHECK_KEY`.
Health calls need no API key. Imports nothing from vecdb, only grpc.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE = "vecdb.v1.VectorDB"


def _read(var: str) -> bytes | None:
    path = os.environ.get(var, "")
    return Path(path).read_bytes() if path else None


def channel(env: dict[str, str]) -> grpc.Channel:
    """The channel to the server in this container, plaintext or TLS as configured."""
    address = f"127.0.0.1:{env.get('VECDB__SERVER__PORT', '7700')}"
    cert = env.get("VECDB__TLS__CERT", "")
    if not cert:
        return grpc.insecure_channel(address)
    ca = env.get("VECDB_HEALTHCHECK_CA") or cert
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=_read("VECDB_HEALTHCHECK_KEY"),
        certificate_chain=_read("VECDB_HEALTHCHECK_CERT"),
    )
    name = env.get("VECDB_HEALTHCHECK_SERVER_NAME", "localhost")
    return grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", name)])


def main() -> int:
    try:
        with channel(dict(os.environ)) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=3
            )
    except (grpc.RpcError, OSError) as exc:
        code = exc.code().name if isinstance(exc, grpc.RpcError) else str(exc)
        print(f"unhealthy: {code}")
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
