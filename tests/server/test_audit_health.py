"""Audit of the health check command (`python -m vecdb.server.healthcheck`) on a real
server: a bad `--ca` is a one-line error and an unhealthy exit, not a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vecdb.server import healthcheck
from vecdb.server.app import VecdbServer


def test_healthcheck_with_a_missing_ca_file_says_so_and_exits_1(
    server: VecdbServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--ca` naming no file exits 1 (unhealthy) with a line naming the file (it raised
    FileNotFoundError with a traceback)."""
    missing = tmp_path / "no-ca.pem"
    assert healthcheck.main(["--address", f"127.0.0.1:{server.port}", "--ca", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"cannot read --ca {missing}" in err and "Traceback" not in err
