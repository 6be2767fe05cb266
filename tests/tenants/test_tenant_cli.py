"""`vecdb ingest --tenant/--grant-to` loads points owned by (and shared with) tenants, embedded
and over gRPC; `vecdb inspect` lists a multi-tenant collection's tenants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import vecdb
from vecdb.cli.main import main
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config


def _files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, rng.standard_normal((300, 8)).astype(np.float32))
    np.save(b, rng.standard_normal((200, 8)).astype(np.float32))
    return a, b


def _ingest(*args: Any) -> str:
    out = CliRunner().invoke(main, ["ingest", *map(str, args), "--quiet"])
    assert out.exit_code == 0, out.output
    return out.output


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_ingest_with_tenant_and_grant_to(tmp_path: Path, mode: str) -> None:
    """The first load creates the multi-tenant collection and its owner; a second load owned
    by another tenant is shared with the first; counts per tenant follow."""
    a, b = _files(tmp_path)
    server = None
    target = str(tmp_path / "db")
    if mode == "remote":
        cfg = load_config(env={}, overrides={
            "server": {"data": target, "port": 0, "workers": 2}, "metrics": {"enabled": False},
        })  # fmt: skip
        server = VecdbServer(cfg).start()
        target = f"127.0.0.1:{server.port}"
    try:
        _ingest(a, "--collection", "mt", "--target", target, "--dim", 8, "--metric", "l2",
                "--tenant", "globex")  # fmt: skip
        # b's ids 0..199 collide with a's: give them their own id range through a copy
        c = vecdb.connect(target)
        try:
            assert c.get_collection("mt").multi_tenant
            c.create_collection("mt2", 8, "l2", multi_tenant=True)
            c.create_tenant("mt2", "globex")
        finally:
            c.close()
        _ingest(b, "--collection", "mt2", "--target", target, "--tenant", "acme",
                "--grant-to", "globex")  # fmt: skip
        c = vecdb.connect(target)
        try:
            assert c.count("mt", tenant="globex") == 300
            assert c.count("mt2", tenant="acme") == 200 == c.count("mt2", tenant="globex")
            assert c.get_tenant("mt2", "acme").owned == 200
            assert c.get_tenant("mt2", "globex").owned == 0
        finally:
            c.close()
    finally:
        if server is not None:
            server.stop(grace=0)


def test_grant_to_needs_a_tenant(tmp_path: Path) -> None:
    a, _ = _files(tmp_path)
    out = CliRunner().invoke(main, ["ingest", str(a), "--collection", "x", "--target",
                                    str(tmp_path / "db"), "--dim", "8", "--grant-to", "g"])  # fmt: skip
    assert out.exit_code == 1 and "--grant-to needs --tenant" in out.output


def test_inspect_lists_tenants(tmp_path: Path) -> None:
    """inspect shows each tenant's vectors, owned points and a drop in progress."""
    with vecdb.connect(str(tmp_path / "db")) as c:
        c.create_collection("mt", 4, "l2", index="flat", multi_tenant=True)
        for t in ("a", "b"):
            c.create_tenant("mt", t)
        c.upsert("mt", [1, 2, 3], np.eye(3, 4, dtype=np.float32), tenant="a", grant_to=["b"])
        c.upsert("mt", [4], np.ones((1, 4), np.float32), tenant="b")
    out = CliRunner().invoke(main, ["inspect", str(tmp_path / "db"), "--json"])
    assert out.exit_code == 0, out.output
    (coll,) = json.loads(out.output)["collections"]
    by = {t["name"]: t for t in coll["tenants"]}
    assert (by["a"]["vectors"], by["a"]["owned"]) == (3, 3)
    assert (by["b"]["vectors"], by["b"]["owned"], by["b"]["state"]) == (4, 1, "active")
    text = CliRunner().invoke(main, ["inspect", str(tmp_path / "db")]).output
    assert "2 tenants" in text and "b: 4 vectors, 1 owned" in text
