"""Stored per-tenant quotas (max_vectors, max_bytes): enforced at upsert and grant with nothing
written, shown in TenantInfo, changed by update_tenant, kept across a restart, identical in
the three SDK modes; server-config defaults; tenant-scoped keys cannot set them. Also the
other numbers of issue 10 item 5/6: get_tenant's sub-tree nodes, CollectionInfo.count while a
drop's cleanup waits, and per-call search stats (with_stats) in every mode."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vecdb
from vecdb.engine import Database
from vecdb.errors import PermissionDenied, ResourceExhausted
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))  # the API tests' three modes
from api_modes import Trio, outcome  # noqa: E402

D = 4
X = (np.arange(80, dtype=np.float32).reshape(20, D) + 1) / 10


def quota_scenario(c: Any) -> list[Any]:
    """Quotas through every call that can grow a tenant, answered in a comparable form."""
    out: list[Any] = []
    c.create_collection("q", D, "l2", index="flat", multi_tenant=True)
    out.append(replace(c.create_tenant("q", "acme", max_vectors=4, max_bytes=3 * D * 4),
                       created=0.0))  # fmt: skip
    out.append(replace(c.create_tenant("q", "globex", max_vectors=2), created=0.0))
    out.append(replace(c.create_tenant("q", "free"), created=0.0))
    out.append(c.upsert("q", [0, 1, 2], X[:3], tenant="acme"))  # at the byte quota
    out.append(outcome(c, lambda c: c.upsert("q", [3], X[3:4], tenant="acme")))
    out.append(c.upsert("q", [0, 1], X[4:6], tenant="acme"))  # replacing its own: no growth
    out.append(c.upsert("q", [10], X[10:11], tenant="globex"))
    out.append(outcome(c, lambda c: c.grant("q", [0, 1], tenant="globex")))  # would hold 3
    out.append(c.grant("q", [0], tenant="globex"))  # holds 2: at the quota
    out.append(outcome(c, lambda c: c.upsert("q", [11], X[11:12], tenant="globex")))
    out.append(outcome(c, lambda c: c.upsert("q", [12], X[12:13], tenant="free",
                                             grant_to=["globex"])))  # fmt: skip
    out.append(c.grant("q", [0], tenant="globex"))  # already granted: no growth, no refusal
    out.append(c.upsert("q", [0], X[6:7], tenant="acme", grant_to=["globex"]))  # kept grant
    out.append(c.revoke("q", [0], tenant="globex"))
    out.append(c.upsert("q", [11], X[11:12], tenant="globex"))  # room again
    out.append(replace(c.update_tenant("q", "acme", max_bytes=0), created=0.0))  # unlimited
    out.append(c.upsert("q", [3], X[3:4], tenant="acme"))  # 4 vectors: max_vectors now
    out.append(outcome(c, lambda c: c.upsert("q", [4], X[4:5], tenant="acme")))
    out.append(replace(c.update_tenant("q", "acme", max_vectors=1), created=0.0))  # below use
    out.append(c.upsert("q", [3], X[7:8], tenant="acme"))  # replacing is still fine
    out.append(outcome(c, lambda c: c.upsert("q", [4], X[4:5], tenant="acme")))
    out.append(c.delete("q", [1, 2, 3], tenant="acme"))
    out.append(outcome(c, lambda c: c.upsert("q", [4], X[4:5], tenant="acme")))  # 2 > 1
    out.append(c.delete("q", [0], tenant="acme"))
    out.append(c.upsert("q", [4], X[4:5], tenant="acme"))  # 1 <= 1
    out.append([replace(i, created=0.0) for i in c.list_tenants("q")[0]])
    out.append([c.count("q", tenant=t) for t in ("acme", "globex", "free")])
    out.append(c.count("q"))
    return out


def test_quotas_refuse_growth_alike_in_every_mode(tmp_path: Path) -> None:
    """Same refusals (class, message, field, reason), counts and infos in all three modes;
    a refused write changes nothing."""
    trio = Trio(tmp_path)
    try:
        got = trio.run(quota_scenario)
    finally:
        trio.close()
    assert got["remote"] == got["local"]
    assert got["aio"] == got["local"]
    local = got["local"]
    assert local[4] == (ResourceExhausted, "tenant 'acme' would own 64 bytes of vectors, "
                        "over its 48-byte quota", "tenant", "TENANT_BYTES_QUOTA")  # fmt: skip
    assert local[7][2:] == ("tenant", "TENANT_VECTOR_QUOTA")
    assert "would hold 3 vectors, over its 2-vector quota" in local[7][1]
    assert local[10][2:] == ("grant_to", "TENANT_VECTOR_QUOTA")
    infos = {i.name: i for i in local[-3]}
    assert (infos["acme"].max_vectors, infos["acme"].max_bytes) == (1, 0)
    assert (infos["globex"].max_vectors, infos["free"].max_vectors) == (2, 0)
    assert local[-2] == [1, 2, 0]  # acme: 4; globex: 10, 11; free: nothing (refused)
    assert local[-1] == 3


def test_quota_refusal_names_the_numbers_with_separators(tmp_path: Path) -> None:
    """The message says how many the tenant would hold and its limit, with thousands marks."""
    db = Database(tmp_path / "db", sync=False)
    try:
        db.create_collection("q", 2, "l2", index="flat", multi_tenant=True)
        db.create_tenant("q", "acme", max_vectors=10_000)
        ids = np.arange(10_000)
        db.upsert("q", ids, np.random.default_rng(0).random((10_000, 2), np.float32), tenant="acme")
        with pytest.raises(ResourceExhausted) as err:
            db.upsert("q", [10_000], [[0.5, 0.5]], tenant="acme")
        assert err.value.message == ("tenant 'acme' would hold 10,001 vectors, over its "
                                     "10,000-vector quota")  # fmt: skip
        assert db.count("q", tenant="acme") == 10_000
    finally:
        db.close()


def test_quotas_survive_a_restart(tmp_path: Path) -> None:
    """The limits are in the tenant's registry row: a reopened database enforces them."""
    path = tmp_path / "db"
    with vecdb.connect(str(path)) as c:
        c.create_collection("q", D, "l2", index="flat", multi_tenant=True)
        c.create_tenant("q", "acme", max_vectors=2)
        c.create_tenant("q", "globex")
        c.update_tenant("q", "globex", max_bytes=D * 4)
        c.upsert("q", [0, 1], X[:2], tenant="acme")
    with vecdb.connect(str(path)) as c:
        assert c.get_tenant("q", "acme").max_vectors == 2
        assert c.get_tenant("q", "globex").max_bytes == D * 4
        with pytest.raises(ResourceExhausted):
            c.upsert("q", [2], X[2:3], tenant="acme")
        c.upsert("q", [5], X[5:6], tenant="globex")
        with pytest.raises(ResourceExhausted):
            c.upsert("q", [6], X[6:7], tenant="globex")


def _server(data: Path, **sections: Any) -> VecdbServer:
    cfg = load_config(env={}, overrides={
        "server": {"data": str(data), "port": 0, "workers": 4},
        "metrics": {"enabled": False}, **sections,
    })  # fmt: skip
    return VecdbServer(cfg).start()


def test_server_config_gives_default_quotas_to_new_tenants(tmp_path: Path) -> None:
    """`[quotas] max_vectors` / `[quotas.tenants.x] max_bytes` are stored by a CreateTenant
    naming none; a CreateTenant naming 0 is unlimited."""
    quotas = {"max_vectors": 5, "tenants": {"big": {"max_vectors": 0, "max_bytes": 64}}}
    srv = _server(tmp_path / "d", quotas=quotas)
    try:
        with vecdb.connect(f"127.0.0.1:{srv.port}") as c:
            c.create_collection("q", D, "l2", index="flat", multi_tenant=True)
            assert c.create_tenant("q", "small").max_vectors == 5
            big = c.create_tenant("q", "big")
            assert (big.max_vectors, big.max_bytes) == (0, 64)
            assert c.create_tenant("q", "free", max_vectors=0).max_vectors == 0
            c.upsert("q", list(range(5)), X[:5], tenant="small")
            with pytest.raises(ResourceExhausted) as err:
                c.upsert("q", [5], X[5:6], tenant="small")
            assert err.value.reason == "TENANT_VECTOR_QUOTA"
    finally:
        srv.stop(0)


def test_a_tenant_key_cannot_set_quotas(tmp_path: Path) -> None:
    """Even an admin key bound to a tenant may not UpdateTenant or create with quotas (a
    tenant must not raise its own limits); an unbound admin key may."""
    keys = [{"key": "root-key-000000000000", "role": "admin"},
            {"key": "acme-admin-0000000000", "role": "admin", "tenants": ["acme"]}]  # fmt: skip
    srv = _server(tmp_path / "d", auth={"keys": keys})
    target = f"127.0.0.1:{srv.port}"
    try:
        with (
            vecdb.connect(target, api_key="root-key-000000000000") as root,
            vecdb.connect(target, api_key="acme-admin-0000000000") as acme,
        ):
            root.create_collection("q", D, "l2", index="flat", multi_tenant=True)
            root.create_tenant("q", "acme", max_vectors=1)
            with pytest.raises(PermissionDenied) as err:
                acme.update_tenant("q", "acme", max_vectors=100)
            assert err.value.reason == "TENANT_SCOPED_KEY"
            with pytest.raises(PermissionDenied):
                acme.update_tenant("q", "globex", max_vectors=100)
            with pytest.raises(PermissionDenied):  # refused before the engine is asked
                acme.create_tenant("q", "acme", max_vectors=0)
            assert root.update_tenant("q", "acme", max_vectors=9).max_vectors == 9
            writer = root.create_api_key("write")  # an unbound writer is not an admin
            with vecdb.connect(target, api_key=writer.key) as w, pytest.raises(PermissionDenied):
                w.update_tenant("q", "acme", max_vectors=100)
            assert root.get_tenant("q", "acme").max_vectors == 9
    finally:
        srv.stop(0)


def test_example_config_documents_tenant_keys_and_quotas(tmp_path: Path) -> None:
    """deploy/vecdb.example.toml's commented `[[auth.keys]]` and `[quotas.tenants.acme]`
    blocks are valid once uncommented, and mean what they say."""
    example = Path(__file__).resolve().parents[2] / "deploy" / "vecdb.example.toml"
    lines = example.read_text().splitlines()
    live = [re.sub(r"^# (?=\[|[a-z_]+ += )", "", line) for line in lines]
    assert live != lines
    path = tmp_path / "vecdb.toml"
    path.write_text("\n".join(live) + "\n")
    cfg = load_config(path, env={})
    (key,) = cfg.auth.keys
    assert (key["role"], key["tenants"], key["collections"]) == ("write", ["acme"], ["docs"])
    assert cfg.quotas.tenants["acme"] == {
        "requests_per_second": 50, "max_concurrent_queries": 4, "max_vectors": 1_000_000}  # fmt: skip


def test_random_writes_are_refused_exactly_when_a_quota_would_be_passed(tmp_path: Path) -> None:
    """600 random upserts (new and replaced points, grant_to), grants, revokes, deletes and
    quota changes against a model: a write is refused exactly when some tenant it grows
    would pass a limit (with that limit's reason), nothing of a refused write lands, and
    every tenant's vectors / owned / bytes equal the model's after every step."""
    rng = np.random.default_rng(5)
    names = ["a", "b", "c", "d"]
    owner: dict[int, str] = {}
    grants: dict[int, set[str]] = {}
    limits = {t: (int(rng.integers(3, 12)), int(rng.integers(2, 8)) * D * 4) for t in names}
    db = Database(tmp_path / "db", sync=False)
    tally = {"refused": 0, "done": 0}

    def vis(t: str, own: dict[int, str], gr: dict[int, set[str]]) -> int:
        return sum(1 for i, o in own.items() if o == t or t in gr[i])

    def owned(t: str, own: dict[int, str]) -> int:
        return sum(1 for o in own.values() if o == t)

    def violated(own: dict[int, str], gr: dict[int, set[str]]) -> set[str]:
        out = set()
        for t in names:
            mv, mb = limits[t]
            if mv and vis(t, own, gr) > max(mv, vis(t, owner, grants)):
                out.add("TENANT_VECTOR_QUOTA")
            if mb and owned(t, own) * 4 * D > max(mb, owned(t, owner) * 4 * D):
                out.add("TENANT_BYTES_QUOTA")
        return out

    try:
        db.create_collection("q", D, "l2", index="flat", multi_tenant=True)
        for t in names:
            db.create_tenant("q", t, max_vectors=limits[t][0], max_bytes=limits[t][1])
        for step in range(600):
            op = rng.random()
            t = names[int(rng.integers(len(names)))]
            own, gr = dict(owner), {i: set(g) for i, g in grants.items()}
            if op < 0.45:  # upsert: free ids or t's own, maybe shared
                free = [i for i in range(40) if owner.get(i, t) == t]
                ids = sorted(rng.choice(free, size=min(len(free), int(rng.integers(1, 4))),
                                        replace=False).tolist())  # fmt: skip
                to = [g for g in names if g != t and rng.random() < 0.3]
                for i in ids:
                    gr[i] = (gr[i] | set(to)) if own.get(i) == t else set(to)
                    own[i] = t
                vecs = rng.random((len(ids), D), np.float32)
                call: tuple[Any, tuple[Any, ...], dict[str, Any]] = (
                    db.upsert, ("q", ids, vecs), {"tenant": t, "grant_to": to})  # fmt: skip
            elif op < 0.65 and owner:  # an admin's grant to t
                ids = sorted({int(i) for i in rng.choice(sorted(owner), size=3)})
                for i in ids:
                    if own[i] != t:
                        gr[i].add(t)
                call = (db.grant, ("q", ids), {"tenant": t})
            elif op < 0.8 and owner:  # revoke t's grants (never refused)
                ids = sorted(i for i in owner if owner[i] != t)[:3]
                for i in ids:
                    gr[i].discard(t)
                call = (db.revoke if ids else _nothing, ("q", ids), {"tenant": t})
            elif op < 0.92 and owner:  # t deletes some of its own
                ids = [i for i in owner if owner[i] == t][:2]
                for i in ids:
                    own.pop(i)
                    gr.pop(i)
                call = (db.delete if ids else _nothing, ("q", ids), {"tenant": t})
            else:  # an admin moves t's limits (maybe under what it holds)
                limits[t] = (int(rng.integers(0, 12)), int(rng.integers(0, 8)) * D * 4)
                db.update_tenant("q", t, max_vectors=limits[t][0], max_bytes=limits[t][1])
                continue
            bad = violated(own, gr)
            if bad:
                with pytest.raises(ResourceExhausted) as err:
                    call[0](*call[1], **call[2])
                assert err.value.reason in bad, (step, err.value, bad)
                tally["refused"] += 1
            else:
                call[0](*call[1], **call[2])
                owner, grants = own, gr
                tally["done"] += 1
            for name in names:
                info = db.get_tenant("q", name)
                want = (vis(name, owner, grants), owned(name, owner))
                assert (info.vectors, info.owned) == want, (step, name)
                assert info.bytes == want[1] * 4 * D
        assert tally["refused"] >= 30 and tally["done"] >= 200, tally
    finally:
        db.close()


def _nothing(*args: Any, **kwargs: Any) -> int:
    return 0
