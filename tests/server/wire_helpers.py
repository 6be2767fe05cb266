"""Helpers of the server tests (imported by conftest.py and the tests): server configs, health
checks, a seeded database and its snapshot, a slow engine wrapper, throw-away certificates.

Kept out of conftest.py so tests can import it by a unique module name.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

import vecdb
from vecdb.engine import Database
from vecdb.server.config import ServerConfig, load_config

DIM = 4


def server_config(data: Path, **sections: dict[str, Any]) -> ServerConfig:
    """A config for a test server: ephemeral port, metrics off unless asked, few threads."""
    base: dict[str, dict[str, Any]] = {
        "server": {"data": str(data), "port": 0, "workers": 8},
        "metrics": {"enabled": False, "port": 0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return load_config(env={}, overrides=base)


def health_status(port: int, service: str = "", credentials: Any = None) -> str:
    """The name of the health status the server reports (e.g. "SERVING")."""
    target = f"127.0.0.1:{port}"
    ch = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


def seed(client: vecdb.Client) -> None:
    """Three small collections: int ids (l2), cosine, str ids; with payloads."""
    rng = np.random.default_rng(7)
    client.create_collection("base", dim=DIM, metric="l2", index="flat")
    client.upsert("base", list(range(20)), rng.standard_normal((20, DIM)),
                  [{"n": i} for i in range(20)])  # fmt: skip
    client.create_collection("cos", dim=DIM, metric="cosine", index="flat")
    client.upsert("cos", list(range(10)), rng.standard_normal((10, DIM)) + 0.1)
    client.create_collection("sid", dim=DIM, metric="ip", id_type="str", index="flat")
    client.upsert("sid", ["a", "b", "日本語"], rng.standard_normal((3, DIM)))


def snapshot(client: vecdb.Client) -> Any:
    """Everything observable about the seeded data, for before/after comparisons."""
    out = []
    q = np.ones(DIM, np.float32)
    for info in client.list_collections():
        ids: list[Any] = (
            list(range(30)) if info.id_type.value == "int" else ["a", "b", "日本語", "zz"]
        )
        recs = client.get(info.name, ids)
        res = client.search(info.name, q, k=5, with_payload=True)
        out.append((info.name, info.count, client.count(info.name),
                    [(r.id, r.vector.tolist(), r.payload) for r in recs],
                    res.ids.tolist(), res.distances.tolist(), res.payloads))  # fmt: skip
    return out


class SlowDb:
    """Delegates to a real `Database`, but `search` sleeps `delay` seconds first."""

    def __init__(self, db: Database, delay: float = 1.0) -> None:
        self.db = db
        self.delay = delay
        self.entered = threading.Event()  # set when a search call is inside

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        time.sleep(self.delay)
        return self.db.search(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(dirpath: Path, name: str, ca: str, ext: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.csr", "-subj", f"/CN={name}", cwd=dirpath)  # fmt: skip
    (dirpath / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
             cwd=dirpath)  # fmt: skip


def make_certs(d: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a second
    CA ("rogue") with its own client certificate. Returns name -> path ("ca", "ca_key", ...)."""
    for ca in ("ca", "rogue_ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=vecdb test {ca}", cwd=d)  # fmt: skip
    _issue(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
           "extendedKeyUsage=serverAuth\n")  # fmt: skip
    _issue(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _issue(d, "rogue", "rogue_ca", "extendedKeyUsage=clientAuth\n")
    out = {p.stem: str(p) for p in d.glob("*.pem")}
    out.update({f"{p.stem}_key": str(p) for p in d.glob("*.key")})
    return out
