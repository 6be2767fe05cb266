"""deploy/: the container health probe works against real servers with and without TLS, the
Dockerfile's build stage has the compiler hnswlib needs, and compose and the CLI agree on
the admin key's environment variable.

The probe runs as a child process with the environment the container would give it; the
servers are real, on 127.0.0.1 with ephemeral ports (certificates from the openssl CLI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from vecdb.cli.main import main
from vecdb.server.app import VecdbServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
sys.path.insert(0, str(ROOT / "tests" / "server"))
from wire_helpers import make_certs, server_config  # noqa: E402


def probe(port: int, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VECDB")}
    return subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py")],
        env={**base, "VECDB__SERVER__PORT": str(port), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make test certificates")
    d = tmp_path_factory.mktemp("certs")
    out = make_certs(d)
    chain = d / "chain.pem"  # what a deployment typically mounts: leaf, then its CA
    chain.write_text(Path(out["server"]).read_text() + Path(out["ca"]).read_text())
    out["chain"] = str(chain)
    return out


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    servers: list[VecdbServer] = []

    def run(**sections: dict[str, str]) -> VecdbServer:
        srv = VecdbServer(server_config(tmp_path / f"d{len(servers)}", **sections)).start()
        servers.append(srv)
        return srv

    yield run
    for srv in servers:
        srv.stop(grace=0)


def test_probe_plaintext_server(start) -> None:  # type: ignore[no-untyped-def]
    """No TLS configured: a plaintext probe gets SERVING, exit 0 (no API key needed)."""
    srv = start(auth={"admin_key": "k"})
    out = probe(srv.port)
    assert (out.returncode, out.stdout.strip()) == (0, "SERVING"), out.stderr


def test_probe_tls_server_trusting_its_chain(start, certs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """TLS on, nothing else said: the probe trusts the server's chain file and succeeds."""
    srv = start(tls={"cert": certs["chain"], "key": certs["server_key"]})
    out = probe(srv.port, VECDB__TLS__CERT=certs["chain"], VECDB__TLS__KEY=certs["server_key"])
    assert (out.returncode, out.stdout.strip()) == (0, "SERVING"), out.stderr


def test_probe_tls_server_with_a_given_ca(start, certs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """A leaf certificate alone: VECDB_HEALTHCHECK_CA names the CA to trust; without it, or
    with plaintext, the probe reports unhealthy (exit 1)."""
    srv = start(tls={"cert": certs["server"], "key": certs["server_key"]})
    ok = probe(srv.port, VECDB__TLS__CERT=certs["server"], VECDB_HEALTHCHECK_CA=certs["ca"])
    assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
    plain = probe(srv.port)
    assert plain.returncode == 1 and plain.stdout.startswith("unhealthy")


def test_probe_mtls_server_with_a_client_certificate(start, certs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Mutual TLS: the probe presents VECDB_HEALTHCHECK_CERT/KEY."""
    srv = start(tls={"cert": certs["chain"], "key": certs["server_key"], "client_ca": certs["ca"]})
    env = {"VECDB__TLS__CERT": certs["chain"], "VECDB__TLS__CLIENT_CA": certs["ca"]}
    assert probe(srv.port, **env).returncode == 1
    out = probe(srv.port, **env, VECDB_HEALTHCHECK_CERT=certs["client"],
                VECDB_HEALTHCHECK_KEY=certs["client_key"])  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_builds_with_a_compiler_and_probes_with_the_script() -> None:
    """The build stage installs build-essential before building wheels; the health check
    runs the probe copied into the image."""
    text = (DEPLOY / "Dockerfile").read_text()
    _, build, runtime = text.split("\nFROM ")
    assert "AS build" in build and "build-essential" in build
    assert build.index("build-essential") < build.index("pip wheel")
    assert "COPY deploy/healthcheck.py /usr/local/lib/vecdb-healthcheck.py" in runtime
    assert '"python", "/usr/local/lib/vecdb-healthcheck.py"' in runtime


def _envvar(command: str, option: str) -> str | None:
    cmd = main.commands[command]
    param = next(p for p in cmd.params if isinstance(p, click.Option) and option in p.opts)
    return param.envvar  # type: ignore[return-value]


def test_compose_and_cli_share_the_admin_key_variable() -> None:
    """The variable compose passes to the server is the one `vecdb serve --api-key` reads
    and the client commands read."""
    compose = (DEPLOY / "docker-compose.yml").read_text()
    passed = re.findall(r"^\s+(VECDB_API_KEY): \$\{(\w+):-\}", compose, re.MULTILINE)
    assert passed == [("VECDB_API_KEY", "VECDB_API_KEY")]
    assert "ADMIN_KEY" not in compose
    for command in ("serve", "ingest", "optimize", "snapshot"):
        assert _envvar(command, "--api-key") == "VECDB_API_KEY", command
