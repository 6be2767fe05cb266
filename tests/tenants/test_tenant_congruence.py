"""The tenant calls give the same answers embedded, remote and async remote (one scenario run
in each mode over a database of its own)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))  # the API tests' three modes
from api_modes import Trio  # noqa: E402


def scenario(c: Any) -> list[Any]:
    """Every tenant call, with shared points, answered in a comparable form."""
    out: list[Any] = []
    x = np.arange(48, dtype=np.float32).reshape(12, 4) / 7
    c.create_collection("mt", 4, "l2", index="flat", multi_tenant=True)
    out.append(c.get_collection("mt").multi_tenant)
    for t in ("acme", "globex", "initech"):
        out.append(replace(c.create_tenant("mt", t), created=0.0))
    out.append(c.upsert("mt", list(range(6)), x[:6], [{"i": i} for i in range(6)], tenant="acme",
                        grant_to=["globex"]))  # fmt: skip
    out.append(c.upsert("mt", list(range(6, 12)), x[6:], tenant="globex"))
    out.append(c.grant("mt", [6, 7], tenant="initech", owner="globex"))
    out.append(c.grant("mt", [6, 7, 8], tenant="initech"))
    out.append(c.revoke("mt", [0, 1], tenant="globex", owner="acme"))
    for t in ("acme", "globex", "initech"):
        res = c.search("mt", x[3], k=5, tenant=t, with_payload=True)
        out.append((res.ids.tolist(), res.distances.tolist(), res.payloads))
        out.append(c.count("mt", tenant=t))
        page, nxt = c.scroll("mt", tenant=t, limit=3)
        out.append(([r.id for r in page], nxt))
        out.append([r.id for r in c.get("mt", list(range(12)), tenant=t, with_vectors=False)])
    res = c.search("mt", x[:2], k=4, tenants=["acme", "initech"])
    out.append(res.ids.tolist())
    out.append(c.count("mt", filter={"i": {"$gte": 3}}, tenant="globex"))
    out.append(c.set_payload("mt", [2], {"j": 1}, tenant="acme"))
    out.append(c.delete("mt", [5], tenant="acme"))
    infos, nxt = c.list_tenants("mt", limit=2)
    out.append(([replace(i, created=0.0) for i in infos], nxt))
    c.drop_tenant("mt", "acme")
    out.append(c.count("mt"))
    c.optimize("mt")
    out.append([i.name for i in c.list_tenants("mt")[0]])
    out.append(replace(c.get_tenant("mt", "globex"), created=0.0))
    return out


def test_tenant_calls_answer_the_same_in_every_mode(tmp_path: Path) -> None:
    """Same results, counts, pages and tenant infos embedded, remote and async remote."""
    trio = Trio(tmp_path)
    try:
        got = trio.run(scenario)
    finally:
        trio.close()
    assert got["remote"] == got["local"]
    assert got["aio"] == got["local"]
    assert got["local"][-1].vectors == 6  # globex: its own 6 (acme's were dropped)
