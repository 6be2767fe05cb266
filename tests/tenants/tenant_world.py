"""A model of a multi-tenant collection for the tenant tests, and the isolation checker.

`World` holds what the collection must contain: per point its vector, owner and grantees.
`build_world` draws one (tenant sizes from a Zipf-like law, a share of points granted to 1-3
more tenants), `load` writes it through any SDK client (grants both through `upsert(...,
grant_to=...)` and `grant`), `churn` changes it through the client and the model alike, and
`check_isolation` sends randomized searches, gets, counts and scrolls across tenants and
compares each answer with the model: nothing outside the caller's grants, and (flat index)
exactly the brute-force top-k over the tenant's granted vectors or (SPANN) containment and
recall. Also `access_lists`, the state of the access rows read straight from RocksDB, which
the property and crash tests compare with the engine's memory image. No tests here.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from oracles import assert_topk, distances, recall_at_k

from vecdb.engine.tenants import DROPPING, OWNER, decode_acl
from vecdb.storage import kv as kvmod

DIM = 16
METRIC = "l2"


@dataclass
class World:
    """What a multi-tenant collection must hold."""

    tenants: list[str]
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    owner: dict[int, str] = field(default_factory=dict)
    grants: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))

    def visible(self, names: list[str]) -> list[int]:
        want = set(names)
        return sorted(
            i for i, o in self.owner.items() if o in want or self.grants.get(i, set()) & want
        )

    def delete(self, pid: int) -> None:
        self.vectors.pop(pid, None)
        self.owner.pop(pid, None)
        self.grants.pop(pid, None)


def build_world(rng: np.random.Generator, n_tenants: int, n_points: int) -> World:
    """Tenants of Zipf-like sizes (some tiny, one large), ~15% of points shared."""
    names = [f"t{i:03d}" for i in range(n_tenants)]
    weights = 1.0 / np.arange(1, n_tenants + 1) ** 1.1
    owners = rng.choice(n_tenants, size=n_points, p=weights / weights.sum())
    w = World(names)
    centers = rng.standard_normal((n_tenants, DIM)).astype(np.float32) * 3
    for pid in range(n_points):
        o = int(owners[pid])
        w.vectors[pid] = (centers[o] + rng.standard_normal(DIM)).astype(np.float32)
        w.owner[pid] = names[o]
        if rng.random() < 0.15:
            extra = rng.choice(n_tenants, size=int(rng.integers(1, 4)), replace=False)
            w.grants[pid] = {names[int(e)] for e in extra if int(e) != o}
    return w


def load(c: Any, coll: str, w: World) -> None:
    """Create the tenants and write every point (half the grants through `grant_to`, the
    other half through `grant`)."""
    for t in w.tenants:
        c.create_tenant(coll, t)
    by_owner: dict[str, list[int]] = defaultdict(list)
    for pid, o in w.owner.items():
        by_owner[o].append(pid)
    for o, pids in by_owner.items():
        plain = [p for p in pids if not w.grants.get(p) or p % 2]
        with_grants = [p for p in pids if p not in set(plain)]
        if plain:
            c.upsert(coll, plain, np.stack([w.vectors[p] for p in plain]), tenant=o)
        for p in with_grants:  # each with its own grant_to
            c.upsert(coll, [p], w.vectors[p][None], tenant=o, grant_to=sorted(w.grants[p]))
    later: dict[str, list[int]] = defaultdict(list)
    for p in w.owner:
        if p % 2 and w.grants.get(p):
            for g in w.grants[p]:
                later[g].append(p)
    for g, pids in later.items():
        assert c.grant(coll, pids, tenant=g) == len(pids)


def churn(c: Any, coll: str, w: World, rng: random.Random, steps: int) -> None:
    """Random grants, revokes, deletes and re-upserts by owners, in the client and the model."""
    for _ in range(steps):
        pids = rng.sample(sorted(w.owner), min(len(w.owner), rng.randint(1, 8)))
        owner = w.owner[pids[0]]
        mine = [p for p in pids if w.owner[p] == owner]
        other = rng.choice([t for t in w.tenants if t != owner])
        op = rng.random()
        if op < 0.35:
            n = c.grant(coll, mine, tenant=other, owner=owner)
            assert n == sum(other not in w.grants.get(p, set()) for p in mine)
            for p in mine:
                w.grants.setdefault(p, set()).add(other)
        elif op < 0.6:
            n = c.revoke(coll, mine, tenant=other, owner=owner)
            assert n == sum(other in w.grants.get(p, set()) for p in mine)
            for p in mine:
                w.grants.get(p, set()).discard(other)
        elif op < 0.8:
            assert c.delete(coll, mine, tenant=owner) == len(mine)
            for p in mine:
                w.delete(p)
        else:
            vecs = np.stack([w.vectors[p] + 0.1 for p in mine]).astype(np.float32)
            c.upsert(coll, mine, vecs, tenant=owner, grant_to=[other])
            for p, v in zip(mine, vecs, strict=True):
                w.vectors[p] = v
                w.grants.setdefault(p, set()).add(other)


def _scope(rng: random.Random, w: World) -> list[str]:
    if rng.random() < 0.75:
        return [rng.choice(w.tenants)]
    return rng.sample(w.tenants, rng.randint(2, 4))


def _kw(names: list[str]) -> dict[str, Any]:
    return {"tenant": names[0]} if len(names) == 1 else {"tenants": names}


def check_isolation(c: Any, coll: str, w: World, rng: random.Random, ops: int, exact: bool
                    ) -> dict[str, Any]:  # fmt: skip
    """`ops` randomized reads across tenants, each checked against the model (see the module
    docstring); returns counts per kind and the SPANN recall."""
    done: dict[str, Any] = defaultdict(int)
    found: list[list[int]] = []
    oracle: list[tuple[list[int], np.ndarray, int]] = []
    for _ in range(ops):
        names = _scope(rng, w)
        vis = w.visible(names)
        vis_set = set(vis)
        kind = rng.random()
        if kind < 0.55:
            k = rng.choice([1, 5, 10, 20])
            base = rng.choice(sorted(w.vectors)) if w.vectors else 0
            q = (w.vectors.get(base, np.zeros(DIM, np.float32)) + 0.3).astype(np.float32)
            res = c.search(coll, q, k=k, **_kw(names))
            got = [int(i) for i in res.ids[0] if i >= 0]
            assert set(got) <= vis_set, f"{names}: results outside the grants"
            base_m = np.stack([w.vectors[i] for i in vis]) if vis else np.zeros((0, DIM))
            d = distances(base_m, q, METRIC)[0]
            if exact:
                assert_topk(res.ids[0].tolist(), res.distances[0], vis, d, k)
            else:
                assert len(got) == min(k, len(vis))
                found.append(res.ids[0].tolist())
                oracle.append((vis, d, k))
            done["search"] += 1
        elif kind < 0.75:
            ids = rng.sample(range(max(w.owner, default=0) + 6), 6)
            recs = c.get(coll, ids, tenant=names[0])
            want = [i for i in ids if i in set(w.visible(names[:1]))]
            assert [r.id for r in recs] == want, f"{names[0]}: get answered other points"
            for r in recs:
                np.testing.assert_array_equal(r.vector, w.vectors[r.id])
            done["get"] += 1
        elif kind < 0.9:
            assert c.count(coll, tenant=names[0]) == len(w.visible(names[:1]))
            done["count"] += 1
        else:
            ids, offset = [], None
            while True:
                page, offset = c.scroll(coll, tenant=names[0], limit=rng.choice([7, 100, 1000]),
                                        offset=offset, with_payload=False)  # fmt: skip
                ids.extend(int(r.id) for r in page)
                if offset is None:
                    break
            assert ids == w.visible(names[:1]), f"{names[0]}: scroll is not its points"
            done["scroll"] += 1
    if found:
        recalls = [
            recall_at_k([f], v, d[None], k) for f, (v, d, k) in zip(found, oracle, strict=True)
        ]
        done["recall"] = float(np.mean(recalls))
    return dict(done)


def access_lists(core: Any) -> dict[str, Any]:
    """The access rows of a collection read straight from RocksDB: per active tenant number
    the live slots it may see, per tenant number the slots it owns, the slots hidden by a
    drop, and whether every `acl:` row has exactly its `tv:` rows."""
    ts = core.tenants
    kv = core.kv
    acl_head = kvmod.META_ACL + core.prefix
    tv_head = kvmod.META_TV + core.prefix
    state: dict[int, str] = {t.no: t.state for t in ts.by_no.values()}
    sees: dict[int, set[int]] = {no: set() for no, s in state.items() if s != DROPPING}
    owned: dict[int, int] = defaultdict(int)
    hidden: set[int] = set()
    rows: set[tuple[int, int, bytes]] = set()
    for key, raw in kv.scan_prefix(kvmod.CF_META, acl_head):
        slot = kvmod.read_u64(key, len(acl_head))
        owner, grantees = decode_acl(raw)
        rows.add((owner, slot, OWNER))
        rows.update((g, slot, b"g") for g in grantees)
        if state.get(owner) in (None, DROPPING):
            hidden.add(slot)
            continue
        owned[owner] += 1
        for no in (owner, *grantees):
            if no in sees:
                sees[no].add(slot)
    tv = set()
    for key, raw in kv.scan_prefix(kvmod.CF_META, tv_head):
        no = int.from_bytes(key[len(tv_head) : len(tv_head) + 4], "big")
        tv.add((no, kvmod.read_u64(key, len(tv_head) + 4), raw))
    return {"sees": sees, "owned": dict(owned), "hidden": hidden, "rows_match": tv == rows}


def assert_memory_matches_rocksdb(core: Any) -> None:
    """The engine's in-memory tenant sets equal what the access rows in RocksDB say."""
    truth = access_lists(core)
    ts = core.tenants
    assert truth["rows_match"], "acl: and tv: rows disagree"
    for no, slots in truth["sees"].items():
        assert set(ts.by_no[no].slots.array().tolist()) == slots, f"tenant {no}: set differs"
        assert ts.by_no[no].owned == truth["owned"].get(no, 0), f"tenant {no}: owned differs"
    assert set(ts.hidden_slots().tolist()) == truth["hidden"]
    alive = core.points.alive()
    for slots in truth["sees"].values():
        assert all(alive[s] for s in slots), "an access list names a deleted point"
