"""A multi-tenant document collection behaves like a dict of owned, shared documents under any
sequence of tenant writes, grants, revokes, deletes, drops, re-creations, trainings and reopens.

A hypothesis state machine drives a real Database (real RocksDB and index files under a tmp
dir, real numba kernels) with a multivector collection (`multi_tenant=True`, 8-d cosine
documents) next to a dict model id -> (tokens as upserted, payload, owner, grantees) and the
set of active tenants. Every request is predicted before it is made: the model says which
error (class, reason, field) the README's rules give it, or what it changes; a refused
request must change nothing, which the checks after every step see. Those checks run for
every active tenant, the union of them all (`tenants=`) and the whole collection (no
tenant): count, get_documents of every id of the pool (the visible ones, tokens
bit-identical, payloads unchanged; nothing of the others), scroll, an exhaustive
search_documents (every cell probed, no candidate cut, exact rerank) equal to the exact MaxSim
top-k over exactly the documents the scope sees (numpy, tie-aware), the default search and a
probing one (a small `ndocs`, so a trained search of a tenant walks cells, its own cell lists
included) returning only visible ids, min(k, n) of them, each at its exact MaxSim, and the
exact / pipeline choice the README promises (a scope of at most 96 documents at k <= 10 is
scored exactly; a trained search of more is not). Dropped names are `NotFound` to reads;
`get_tenant` numbers and states and `stats()["tenants"]["dropping"]` follow the model.

The drop rules, as README.md "Tenants" states them: a dropped owner's documents vanish for
everybody at once (also for the tenants they were granted to), its grants of other tenants'
documents are revoked, and the name may be created again only once the cleanup ended (a new,
empty tenant; before: TENANT_DROPPING). A drop may hold the worker's job lock, so the
cleanup waits and the steps in between see the documents hidden, not yet deleted (another
tenant may take over such an id); otherwise the cleanup runs at once, while the tenant
checks of the next step do (tests at the end pin the moments where global reads went wrong).

Like tests/multivector/test_mv_state_machine.py: a small codebook (K = 16) trained by
`optimize` only (`idle_seconds` 3600), `pipeline_on_few_tokens` so trained searches take the
coded pipeline, and a bulk load of 440-520 documents whose owners' shares (`SHARES`) give one
tenant far more than 96 documents, one or two a little more but at most a quarter of the
collection (their own cell lists) and the rest fewer (scored exactly).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import strategies as gen
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from oracles import FLOAT32, assert_topk, matches, same_json

from vecdb.engine import Database, tenant_jobs
from vecdb.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, VecdbError
from vecdb.index.multivector.params import plaid_defaults

DIM = 8
MAX_ID = 559  # ids 0..MAX_ID: the bulk load holds most, so writes replace and delete often
MAX_TOKENS = 12  # tokens of a generated document
NAMES = ("a", "b", "c", "d", "e")  # "e" (and more) only ever comes from the create rule
# Owners' shares of the bulk load by the number of tenants: the first sees far more than 96
# documents (the exact cut-off at k <= 10), the middle ones a little more than 96 and at most a
# quarter of the collection (their own cell lists), the last fewer (scored exactly)
SHARES = {3: (0.62, 0.19, 0.19), 4: (0.45, 0.19, 0.19, 0.17)}
TAGS = (0, 1, 2, 3)  # payload {"tag": t}: filters of reads and deletes
# K = 16 trains on the bulk load; nprobe 256 (its bound) probes every cell and nothing is
# cut or coded: the exact top-k whatever the codebook (test_mv_state_machine.EXHAUSTIVE)
EXHAUSTIVE: dict[str, Any] = {
    "nprobe": 256,
    "ndocs": 1_000_000,
    "probe_keep": 1_000_000,
    "rerank": "exact",
}
# a scope of more documents than this takes the probe (not "every one a candidate")
PROBING: dict[str, Any] = {"ndocs": 32}
SEARCH_PARAMS: tuple[dict[str, Any] | None, ...] = (
    None, EXHAUSTIVE, PROBING, {"nprobe": 1}, {"refine": 0},
)  # fmt: skip
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None  # RocksDB reopened often

Scope = tuple[str, ...] | None  # None: the whole collection; one name: tenant=; more: tenants=
names_st = st.sampled_from(NAMES)
tag_filters = st.one_of(st.none(), st.sampled_from(TAGS).map(lambda t: {"tag": t}))


@dataclass(frozen=True)
class Doc:
    """A live document as the collection must hold it."""

    tokens: np.ndarray  # (n, DIM) float32 as upserted
    unit: np.ndarray  # the same in float64, unit rows (cosine): what MaxSim scores
    payload: dict[str, Any] | None
    owner: str
    grants: frozenset[str]  # active tenants it is shared with, its owner not among them


@dataclass(frozen=True)
class Refusal:
    """The error a request must raise, as the README names it."""

    error: type[VecdbError]
    reason: str
    field: str | None


class TenantDocuments:
    """The dict model: live documents with owner and grants, the tenants, exact MaxSim."""

    def __init__(self) -> None:
        self.docs: dict[int, Doc] = {}
        self.active: set[str] = set()
        self.dropping: set[str] = set()  # dropped, cleanup not known to have ended

    @staticmethod
    def doc(tokens: np.ndarray, payload: Any, owner: str, grants: set[str]) -> Doc:
        x = np.asarray(tokens, np.float64)
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        return Doc(tokens, unit, payload, owner, frozenset(grants - {owner}))

    def sees(self, tenant: str, d: Doc) -> bool:
        return d.owner == tenant or tenant in d.grants

    def visible(self, scope: Scope, flt: dict[str, Any] | None = None) -> list[int]:
        """Ids the scope may see (every live one without a tenant), matching `flt`."""
        return [
            pid for pid, d in self.docs.items()
            if (scope is None or any(self.sees(t, d) for t in scope)) and matches(d.payload, flt)
        ]  # fmt: skip

    def unknown(self, scope: Scope) -> str | None:
        """The first name of a scope that is no active tenant (its reads are NotFound)."""
        return next((t for t in scope or () if t not in self.active), None)

    def distances(self, query: np.ndarray, ids: list[int]) -> np.ndarray:
        """-MaxSim of `query` against each of `ids` in float64 (the engine's distances)."""
        if not ids:
            return np.zeros(0)
        q = np.asarray(query, np.float64)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        rows = [self.docs[pid].unit for pid in ids]
        starts = np.cumsum([0] + [len(r) for r in rows[:-1]])
        best = np.maximum.reduceat(q @ np.concatenate(rows).T, starts, axis=1)  # (m, docs)
        return -best.sum(axis=0)

    # -- what a request does -----------------------------------------------------------------

    def tenant_refusal(self, names: list[tuple[str, str]]) -> Refusal | None:
        """NotFound for the first (field, name) that is no active tenant."""
        for field, name in names:
            if name not in self.active:
                return Refusal(NotFound, "TENANT_NOT_FOUND", field)
        return None

    def upsert_refusal(self, owner: str, grant_to: list[str], ids: list[int]) -> Refusal | None:
        """README "Writes": the owner and grantees must exist, the owner may not be granted,
        and another tenant's document is `PermissionDenied` (NOT_OWNER)."""
        named = [("tenant", owner)] + [(f"grant_to[{i}]", g) for i, g in enumerate(grant_to)]
        if (refused := self.tenant_refusal(named)) is not None:
            return refused
        if owner in grant_to:
            return Refusal(InvalidArgument, "GRANT_TO_OWNER", f"grant_to[{grant_to.index(owner)}]")
        for i, pid in enumerate(ids):
            d = self.docs.get(pid)
            if d is not None and d.owner != owner:
                return Refusal(PermissionDenied, "NOT_OWNER", f"ids[{i}]")
        return None

    def upsert(self, ids: list[int], docs: list[tuple[np.ndarray, Any]], owner: str,
               grant_to: list[str]) -> None:  # fmt: skip
        """An owner's re-upsert keeps the document's grants and adds `grant_to`."""
        for pid, (tokens, payload) in zip(ids, docs, strict=True):
            kept = self.docs[pid].grants if pid in self.docs else frozenset()
            self.docs[pid] = self.doc(tokens, payload, owner, set(kept) | set(grant_to))

    def access(
        self, ids: list[int], tenant: str, owner: str | None, on: bool
    ) -> Refusal | list[int]:
        """README "Grants": the refusal of a grant / revoke, or the ids it changes."""
        named = [("tenant", tenant)] + ([] if owner is None else [("owner", owner)])
        if (refused := self.tenant_refusal(named)) is not None:
            return refused
        if on and owner == tenant:
            return Refusal(InvalidArgument, "GRANT_TO_OWNER", "tenant")
        for i, pid in enumerate(ids):  # unknown ids first: NotFound naming the first
            if pid not in self.docs:
                return Refusal(NotFound, "NOT_FOUND", f"ids[{i}]")
        changed = []
        for i, pid in enumerate(ids):
            d = self.docs[pid]
            if owner is not None and d.owner != owner:  # one it cannot see looks absent
                if not self.sees(owner, d):
                    return Refusal(NotFound, "NOT_FOUND", f"ids[{i}]")
                return Refusal(PermissionDenied, "NOT_OWNER", f"ids[{i}]")
            if d.owner == tenant:
                if not on:
                    return Refusal(InvalidArgument, "REVOKE_OWNER", f"ids[{i}]")
                continue
            if (tenant in d.grants) != on:
                changed.append(pid)
        return changed

    def set_grant(self, pid: int, tenant: str, on: bool) -> None:
        d = self.docs[pid]
        grants = d.grants | {tenant} if on else d.grants - {tenant}
        self.docs[pid] = Doc(d.tokens, d.unit, d.payload, d.owner, grants)

    def delete(self, ids: list[int], tenant: str | None) -> Refusal | list[int]:
        """README "Writes": a tenant deletes only what it owns; one it was only granted is
        PermissionDenied (nothing deleted), one it cannot see is skipped as missing."""
        if tenant is None:
            return [pid for pid in ids if pid in self.docs]
        if (refused := self.tenant_refusal([("tenant", tenant)])) is not None:
            return refused
        seen = [(i, pid) for i, pid in enumerate(ids)
                if pid in self.docs and self.sees(tenant, self.docs[pid])]  # fmt: skip
        for i, pid in seen:
            if self.docs[pid].owner != tenant:
                return Refusal(PermissionDenied, "NOT_OWNER", f"ids[{i}]")
        return [pid for _, pid in seen]

    def drop(self, name: str) -> None:
        """The dropped owner's documents are deleted (for everybody), its grants revoked."""
        self.active.discard(name)
        self.dropping.add(name)
        for pid, d in list(self.docs.items()):
            if d.owner == name:
                del self.docs[pid]
            elif name in d.grants:
                self.set_grant(pid, name, False)


class TenantDocumentsVsDict(RuleBasedStateMachine):
    """The collection "c" and its model, step by step (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="vecdb-mvtsm-", dir=SCRATCH))
        self.db = self.open()
        self.db.create_collection("c", dim=DIM, metric="cosine", kind="multivector",
                                  multi_tenant=True,
                                  index_params={"K": 16, "min_train_tokens": 64})  # fmt: skip
        self.model = TenantDocuments()
        self.held = False  # the test holds the worker's job lock: drop cleanups wait
        self.gone: set[str] = set()  # names dropped and not created again
        self.hidden: set[int] = set()  # ids of documents a held drop deleted (for `event`)
        rng = np.random.default_rng([gen.QUERY_SALT, 2])
        self.fixed_queries = [self.vectors(rng, m) for m in (1, 5)]

    def open(self) -> Database:
        # sync=False: a reopen in one process sees every write either way; the worker never
        # trains a first codebook on its own (optimize does)
        return Database(self.dir / "db", sync=False, settings={"idle_seconds": 3600})

    def _release(self) -> None:
        if self.held:
            self.db.worker.job_lock.release()
            self.held = False
            self.hidden.clear()

    def teardown(self) -> None:
        event(f"trained at the end: {self.trained()}")
        self._release()
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def trained(self) -> bool:
        return bool(self.db.stats("c")["index"]["trained"])

    @staticmethod
    def vectors(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_normal((n, DIM)).astype(np.float32)

    def expect(self, refusal: Refusal | None, call: Callable[[], Any]) -> Any:
        """Make the call: it raises exactly `refusal`, or succeeds and returns its answer."""
        if refusal is None:
            return call()
        with pytest.raises(refusal.error) as e:
            call()
        assert type(e.value) is refusal.error, e.value
        assert (e.value.reason, e.value.field) == (refusal.reason, refusal.field), e.value
        event(f"refused: {refusal.error.__name__} {refusal.reason}")
        return None

    def name(self, data: st.DataObject, label: str) -> str:
        """A tenant name: an active one 3 times in 4, else any (unknown, dropped, active)."""
        active = st.sampled_from(sorted(self.model.active)) if self.model.active else names_st
        return data.draw(st.one_of(active, active, active, names_st), label=label)

    def scope(self, data: st.DataObject, most: int) -> Scope:
        """No tenant, one, or (most > 1) the union of 2..most (their names as `name` draws)."""
        n = data.draw(st.integers(0, most), label="tenants")
        return None if n == 0 else tuple(dict.fromkeys(self.name(data, "tenant") for _ in range(n)))

    def ids_for(
        self, data: st.DataObject, owner: str | None, most: int, free: bool,
        grantee: str | None = None,
    ) -> list[int]:  # fmt: skip
        """1..most ids: any of the pool, any live ones (another tenant's, shared or not), the
        owner's (and, if `free`, free ids: a write that goes through; or the ids of documents
        a held drop hid: a takeover), or those shared with `grantee` (by `owner`, if given)."""
        docs = self.model.docs
        mine = [p for p, d in docs.items() if d.owner == owner]
        if free:
            mine += [p for p in range(MAX_ID + 1) if p not in docs]
        shared = [p for p, d in docs.items()
                  if grantee in d.grants and owner in (None, d.owner)]  # fmt: skip
        choices = [("any", None), ("live", sorted(docs)), ("mine", sorted(mine)),
                   ("shared", sorted(shared)),
                   ("hidden", sorted(self.hidden - set(docs)) if free else [])]  # fmt: skip
        kind, pool = data.draw(st.sampled_from([c for c in choices if c[1] != []]), label="ids of")
        if pool is None:
            return data.draw(gen.id_lists(gen.int_ids(MAX_ID), 1, most), label="ids")
        return data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=most, unique=True),
                         label=f"{kind} ids")  # fmt: skip

    # -- writes ----------------------------------------------------------------------------

    @initialize(
        seed=gen.seeds(), n=st.integers(440, 520), tenants=st.integers(3, 4), train=st.booleans()
    )
    def bulk_load(self, seed: int, n: int, tenants: int, train: bool) -> None:
        """Tenants of unequal size (`SHARES`), a tenth of the documents shared with one or two
        other tenants; trained now or later."""
        names = list(NAMES[:tenants])
        for name in names:
            self.db.create_tenant("c", name)
            self.model.active.add(name)
        rng = np.random.default_rng(seed)
        share = np.array(SHARES[tenants])
        owners = rng.choice(names, size=n, p=share / share.sum())
        groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for pid in range(n):
            owner = str(owners[pid])
            others = [t for t in names if t != owner]
            grants: tuple[str, ...] = ()
            if rng.random() < 0.1:
                picked = rng.choice(others, int(rng.integers(1, 3)), replace=False)
                grants = tuple(sorted(str(t) for t in picked))
            groups.setdefault((owner, grants), []).append(pid)
        for (owner, grants), ids in groups.items():
            docs = [(self.vectors(rng, int(rng.integers(1, MAX_TOKENS + 1))),
                     None if pid % 9 == 8 else {"tag": pid % len(TAGS)}) for pid in ids]  # fmt: skip
            self.write(owner, list(grants), ids, docs)
        if train:
            self.optimize()

    def write(self, owner: str, grant_to: list[str], ids: list[int],
              docs: list[tuple[np.ndarray, Any]]) -> None:  # fmt: skip
        refusal = self.model.upsert_refusal(owner, grant_to, ids)
        n = self.expect(refusal, lambda: self.db.upsert_documents(
            "c", ids, [t for t, _ in docs], payloads=[p for _, p in docs], tenant=owner,
            grant_to=grant_to or None))  # fmt: skip
        if refusal is None:
            assert n == len(ids)
            taken = [p for p in ids if p not in self.model.docs]
            if self.hidden & set(ids):
                event("upsert took over a held-dropped owner's id")
            self.model.upsert(ids, docs, owner, grant_to)
            event(f"upsert {'took new ids' if taken else 'replaced own documents'}")

    @rule(data=st.data(), seed=gen.seeds(), grants=st.integers(0, 2))
    def upsert(self, data: st.DataObject, seed: int, grants: int) -> None:
        """1-4 documents as a tenant (fresh tokens, or a copy of another's for exact ties),
        sometimes shared at once."""
        owner = self.name(data, "owner")
        grant_to = list(dict.fromkeys(self.name(data, "grant_to") for _ in range(grants)))
        ids = self.ids_for(data, owner, 4, free=True)
        rng = np.random.default_rng(seed)
        docs = []
        for _ in ids:
            payload = data.draw(st.none() | st.sampled_from(TAGS).map(lambda t: {"tag": t}))
            if self.model.docs and data.draw(st.booleans(), label="copy"):
                src = data.draw(st.sampled_from(sorted(self.model.docs)), label="copy of")
                docs.append((self.model.docs[src].tokens.copy(), payload))
            else:
                docs.append((self.vectors(rng, int(rng.integers(1, MAX_TOKENS + 1))), payload))
        self.write(owner, grant_to, ids, docs)

    @rule(data=st.data(), seed=gen.seeds(), lo=st.integers(0, MAX_ID), n=st.integers(30, 160))
    def rewrite_range(self, data: st.DataObject, seed: int, lo: int, n: int) -> None:
        """A tenant rewrites the ids of a range it owns or that are free: dead documents pile
        up, so the worker retrains on its own (DEAD_SHARE) while the checks run."""
        owner = self.name(data, "owner")
        ids = [p for p in range(lo, min(MAX_ID, lo + n) + 1)
               if p not in self.model.docs or self.model.docs[p].owner == owner]  # fmt: skip
        if not ids:
            return
        rng = np.random.default_rng(seed)
        docs = [(self.vectors(rng, int(rng.integers(1, MAX_TOKENS + 1))), {"tag": p % 2})
                for p in ids]  # fmt: skip
        self.write(owner, [], ids, docs)

    @rule(data=st.data(), admin=st.booleans(), on=st.booleans())
    def access(self, data: st.DataObject, admin: bool, on: bool) -> None:
        """grant / revoke, by an owner or (owner=None) an admin."""
        tenant = self.name(data, "tenant")
        owner = None if admin else self.name(data, "owner")
        ids = self.ids_for(data, owner, 4, free=False, grantee=tenant)
        got = self.model.access(ids, tenant, owner, on)
        call = self.db.grant if on else self.db.revoke
        if isinstance(got, Refusal):
            self.expect(got, lambda: call("c", ids, tenant=tenant, owner=owner))
            return
        assert call("c", ids, tenant=tenant, owner=owner) == len(got)
        for pid in got:
            self.model.set_grant(pid, tenant, on)
        event(f"{'grant' if on else 'revoke'} changed {min(len(got), 1)}+")

    @rule(data=st.data(), admin=st.booleans())
    def delete(self, data: st.DataObject, admin: bool) -> None:
        """By id, as a tenant (its own documents) or an admin (any)."""
        tenant = None if admin else self.name(data, "tenant")
        ids = self.ids_for(data, tenant, 6, free=False)
        got = self.model.delete(ids, tenant)
        if isinstance(got, Refusal):
            self.expect(got, lambda: self.db.delete("c", ids, tenant=tenant))
            return
        assert self.db.delete("c", ids, tenant=tenant) == len(got)
        for pid in got:
            del self.model.docs[pid]

    @rule(data=st.data(), tag=st.sampled_from(TAGS), admin=st.booleans())
    def delete_by_filter(self, data: st.DataObject, tag: int, admin: bool) -> None:
        """A tenant's delete by filter deletes only its own matching documents."""
        tenant = None if admin else self.name(data, "tenant")
        flt = {"tag": tag}
        refusal = None if tenant is None else self.model.tenant_refusal([("tenant", tenant)])
        n = self.expect(refusal, lambda: self.db.delete("c", filter=flt, tenant=tenant))
        if refusal is None:
            gone = [p for p in self.model.visible(None, flt)
                    if tenant is None or self.model.docs[p].owner == tenant]  # fmt: skip
            assert n == len(gone)
            for pid in gone:
                del self.model.docs[pid]

    @rule(data=st.data(), hold=st.booleans())
    def drop(self, data: st.DataObject, hold: bool) -> None:
        """With `hold`, the cleanup waits (the worker's job lock is held) until a release, so
        the steps in between see the dropped owner's documents hidden, not yet deleted."""
        name = self.name(data, "tenant")
        if hold and not self.held:
            self.db.worker.job_lock.acquire()
            self.held = True
        refusal = self.model.tenant_refusal([("tenant", name)])
        self.expect(refusal, lambda: self.db.drop_tenant("c", name))
        if refusal is None:
            if self.held:
                self.hidden |= {p for p, d in self.model.docs.items() if d.owner == name}
            self.model.drop(name)
            self.gone.add(name)
            event(f"drop, cleanup {'held' if self.held else 'free'}")

    @rule(data=st.data())
    def create(self, data: st.DataObject) -> None:
        """An active name exists; a dropped one may be created again once its cleanup ended
        (before: TENANT_DROPPING), as a new tenant that sees nothing."""
        gone = sorted(self.gone)
        name = data.draw(st.sampled_from(gone) | names_st if gone else names_st, label="tenant")
        refusal = None
        if name in self.model.active:
            refusal = Refusal(AlreadyExists, "ALREADY_EXISTS", "tenant")
        elif name in self.model.dropping:  # (only held cleanups outlive a step: `settle`)
            refusal = Refusal(AlreadyExists, "TENANT_DROPPING", None)
        self.expect(refusal, lambda: self.db.create_tenant("c", name))
        if refusal is None:
            event(f"create {'again' if name in self.gone else 'new'}")
            self.gone.discard(name)
            self.model.active.add(name)

    @rule()
    def release_cleanups(self) -> None:
        self._release()

    @rule()
    def optimize(self) -> None:
        """Train the codebook (or retrain if due); waits for the drops' cleanups too."""
        self._release()
        self.db.optimize("c")
        self.model.dropping.clear()
        assert not self.db.stats("c")["tenants"]["dropping"]

    @rule()
    def optimize_in_background(self) -> None:
        """The same without waiting: the next steps run while the worker trains."""
        self._release()
        self.db.optimize("c", wait=False)

    @rule()
    def reopen(self) -> None:
        """Owners, grants and drops under way survive a close (the access rows are derived
        again from RocksDB on open; a cleanup resumes)."""
        self._release()
        self.db.close()
        self.db = self.open()

    # -- reads -----------------------------------------------------------------------------

    @rule(
        data=st.data(),
        seed=gen.seeds(),
        sizes=st.lists(st.integers(1, 6), min_size=1, max_size=2),
        k=st.integers(1, 30),
        flt=tag_filters,
        params=st.sampled_from(SEARCH_PARAMS),
        with_payload=st.booleans(),
    )
    def search(
        self, data: st.DataObject, seed: int, sizes: list[int], k: int,
        flt: dict[str, Any] | None, params: dict[str, Any] | None, with_payload: bool,
    ) -> None:  # fmt: skip
        """With no tenant, one, or several (`tenants=`, their union)."""
        scope = self.scope(data, 3)
        rng = np.random.default_rng([gen.QUERY_SALT, seed])
        queries = [self.vectors(rng, m) for m in sizes]
        self.check_search(scope, queries, k, flt, params, with_payload)

    @rule(data=st.data(), flt=tag_filters, limit=st.integers(1, 80))
    def read_pages(self, data: st.DataObject, flt: dict[str, Any] | None, limit: int) -> None:
        """Filtered count and a scroll page by page, in one tenant's scope (or none)."""
        scope = self.scope(data, 1)
        kw = self.scope_kw(scope)
        name = self.model.unknown(scope)
        if name is not None:
            self.expect(Refusal(NotFound, "TENANT_NOT_FOUND", "tenant"),
                        lambda: self.db.count("c", filter=flt, **kw))  # fmt: skip
            return
        want = sorted(self.model.visible(scope, flt))
        assert self.db.count("c", filter=flt, **kw) == len(want)
        got: list[Any] = []
        offset = None
        while True:
            page, offset = self.db.scroll("c", filter=flt, limit=limit, offset=offset, **kw)
            assert len(page) <= limit
            got += page
            if offset is None:
                break
        assert [r.id for r in got] == want
        for r in got:
            assert same_json(r.payload, self.model.docs[r.id].payload), f"id {r.id}"

    @staticmethod
    def scope_kw(scope: Scope) -> dict[str, Any]:
        if scope is None:
            return {}
        return {"tenant": scope[0]} if len(scope) == 1 else {"tenants": list(scope)}

    def check_search(
        self, scope: Scope, queries: list[np.ndarray], k: int, flt: dict[str, Any] | None,
        params: dict[str, Any] | None, with_payload: bool = False,
    ) -> None:  # fmt: skip
        """The answer of a search in `scope` as the model says (see the module docstring)."""
        kw = self.scope_kw(scope)
        name = self.model.unknown(scope)
        if name is not None:
            field = "tenant" if len(scope or ()) == 1 else f"tenants[{(scope or ()).index(name)}]"
            self.expect(Refusal(NotFound, "TENANT_NOT_FOUND", field),
                        lambda: self.db.search_documents("c", queries, k=k, **kw))  # fmt: skip
            return
        trained = self.trained()  # (a training may publish during the search: not undone)
        res = self.db.search_documents("c", queries, k=k, filter=flt, params=params,
                                       with_payload=with_payload, **kw)  # fmt: skip
        ids = self.model.visible(scope, flt)
        exact = res.stats["exact"] == 1.0
        if len(ids) <= max(k, plaid_defaults(k)[2] // 4):
            assert exact, f"a search of {len(ids)} documents was not exact"
        elif trained:
            assert res.stats["exact"] == 0.0, "a trained search of many documents was exact"
        event(f"search {'exact' if exact else 'pipeline'}, {len(scope or ())} tenant(s)")
        assert res.ids.shape == (len(queries), k) and res.distances.shape == (len(queries), k)
        assert res.distances.dtype == np.float32
        col = {pid: j for j, pid in enumerate(ids)}
        for i, q in enumerate(queries):
            dists = self.model.distances(q, ids)
            row, got = res.ids[i].tolist(), res.distances[i]
            if exact or params is EXHAUSTIVE:
                assert_topk(row, got, ids, dists, k, FLOAT32)
            else:
                real = min(k, len(ids))
                assert all(p != -1 for p in row[:real]), f"fewer than {real} results: {row}"
                assert all(p == -1 for p in row[real:]) and np.all(np.isposinf(got[real:]))
                assert len(set(row[:real])) == real, f"an id twice: {row}"
                assert set(row[:real]) <= set(col), f"not visible to {scope}: {row}"
                if params is None or "refine" not in params:  # refined: exact MaxSim
                    tol = FLOAT32.of_row(dists)
                    want = np.array([dists[col[p]] for p in row[:real]])
                    np.testing.assert_allclose(got[:real], want, rtol=0, atol=tol)
                    assert np.all(np.diff(got[:real]) >= -tol), "not ascending"
            if with_payload:
                assert res.payloads is not None
                for pid, pay in zip(row, res.payloads[i], strict=True):
                    want_pay = None if pid == -1 else self.model.docs[pid].payload
                    assert same_json(pay, want_pay), f"id {pid}: payload {pay!r}"

    # -- after every step ------------------------------------------------------------------

    def check_documents(self, scope: Scope) -> None:
        """get_documents of the whole pool: the visible ids in request order, tokens
        bit-identical, payloads unchanged; nothing of the others."""
        pool = list(range(MAX_ID + 1))
        got = self.db.get_documents("c", pool, **self.scope_kw(scope))
        assert [d.id for d in got] == sorted(self.model.visible(scope)), scope
        for doc in got:
            want = self.model.docs[doc.id]
            assert doc.tokens is not None and doc.tokens.dtype == np.float32
            assert doc.tokens.shape == want.tokens.shape, f"id {doc.id}: token count"
            assert doc.tokens.tobytes() == want.tokens.tobytes(), f"id {doc.id}: tokens"
            assert doc.weights is None, f"id {doc.id}: weights appeared"
            assert same_json(doc.payload, want.payload), f"id {doc.id}: {doc.payload!r}"

    def settle(self) -> None:
        """Wait until no drop's cleanup runs (a free one ends within milliseconds; held ones
        wait for a release): from here on the model's `dropping` is exactly the tenants
        whose cleanup is held back."""
        if self.held:
            return
        end = time.monotonic() + 60
        while self.db.stats("c")["tenants"]["dropping"]:
            assert time.monotonic() < end, "a drop's cleanup did not end"
            time.sleep(0.002)
        self.model.dropping.clear()

    def check_scope(self, scope: Scope) -> None:
        kw = self.scope_kw(scope)
        if scope is None or len(scope) == 1:
            assert self.db.count("c", **kw) == len(self.model.visible(scope)), scope
            self.check_documents(scope)
            page, nxt = self.db.scroll("c", limit=1000, **kw)
            assert nxt is None and [r.id for r in page] == sorted(self.model.visible(scope))
        for params in (EXHAUSTIVE, None, PROBING):
            self.check_search(scope, self.fixed_queries, 10, None, params)

    @invariant()
    def equals_model(self) -> None:
        """Every active tenant, their union and the whole collection (while a free cleanup
        may still run): count, get, scroll and searches; then, once none runs, the tenants'
        numbers and states; dropped names are NotFound."""
        m = self.model
        active = sorted(m.active)
        for name in active:
            self.check_scope((name,))
        if len(active) > 1:
            self.check_scope(tuple(active))  # the union: a tenant bitmap of everything
        self.check_scope(None)
        assert self.db.get_collection("c").count == len(m.docs)
        self.settle()
        for name in active:
            info = self.db.get_tenant("c", name)
            owned = sum(d.owner == name for d in m.docs.values())
            assert (info.state, info.vectors, info.owned) == ("active", len(m.visible((name,))),
                                                              owned), name  # fmt: skip
        assert set(self.db.stats("c")["tenants"]["dropping"]) == m.dropping
        for name in sorted(set(NAMES) - m.active):
            with pytest.raises(NotFound):
                self.db.count("c", tenant=name)
            with pytest.raises(NotFound):
                self.db.get_documents("c", [0], tenant=name)
            if name in m.dropping:  # its cleanup is held back
                assert self.db.get_tenant("c", name).state == "dropping"


@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_tenant_documents_behave_like_a_dict_of_owned_shared_documents() -> None:
    """Every tenant (and the whole collection) sees, finds and may change exactly what the
    dict model of owners and grants says, through drops, re-creations, trainings and reopens."""
    run_state_machine_as_test(TenantDocumentsVsDict, settings=gen.machine_settings(8, 35))


# -- global reads interleaved with a drop's cleanup, at the moments that were wrong (fixed in
# 22d58da and 38de916, found by this machine): a hook runs the read where the worker's
# interleaving would, in this thread, with the worker held off.

A_IDS, B_IDS = list(range(30)), list(range(100, 110))


def _dropping_b(db: Database, b_tokens: np.ndarray) -> Any:
    """Tenant a owns 30 documents and b 10 (each `b_tokens`); b is dropped with the worker
    held off (the caller releases `db.worker.job_lock`). Returns the collection's core."""
    rng = np.random.default_rng(5)
    db.create_collection("c", dim=DIM, metric="cosine", kind="multivector", multi_tenant=True)
    for name, ids in (("a", A_IDS), ("b", B_IDS)):
        db.create_tenant("c", name)
        docs = [rng.standard_normal((3, DIM)).astype(np.float32) if name == "a" else b_tokens
                for _ in ids]  # fmt: skip
        db.upsert_documents("c", ids, docs, tenant=name)
    db.worker.job_lock.acquire()
    db.drop_tenant("c", "b")
    return db.collections["c"].core


def test_a_global_search_during_a_drop_cleanup_returns_k_of_the_other_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just before the index forgets the dropped owner's documents (the query's best
    matches), a global search still returns k documents, all of the other tenant's (it
    returned fewer: they were unhidden first, won, and were dropped as deleted)."""
    query = np.ones((2, DIM), np.float32)
    rows: list[list[int]] = []
    with Database(tmp_path / "db", sync=False, settings={"idle_seconds": 3600}) as db:
        core = _dropping_b(db, query[:1].copy())
        try:
            remove = core.index.remove

            def search_then_remove(slots: Any) -> None:
                rows.append(db.search_documents("c", query, k=10).ids[0].tolist())
                remove(slots)

            monkeypatch.setattr(core.index, "remove", search_then_remove)
            tenant_jobs.drop_slice(core)  # deletes b's documents
        finally:
            db.worker.job_lock.release()
        assert len(rows) == 1, "the hook in index.remove was not reached once"
        assert len(rows[0]) == 10 and set(rows[0]) <= set(A_IDS), rows[0]


@pytest.mark.parametrize("read", ["get_documents", "scroll"])
def test_a_global_read_straddling_a_drop_cleanup_slice_leaves_the_dropped_documents_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    """A global read whose RocksDB view predates a cleanup slice that applies before the
    read tests the hidden set shows only the other tenant's documents (the dropped owner's
    came back)."""
    with Database(tmp_path / "db", sync=False, settings={"idle_seconds": 3600}) as db:
        core = _dropping_b(db, np.ones((3, DIM), np.float32))
        sliced: list[bool] = []
        try:
            view = core.kv.view

            def view_then_slice() -> Any:
                got = view()
                if not sliced:
                    sliced.append(True)
                    tenant_jobs.drop_slice(core)  # commits and applies after the read's view
                return got

            monkeypatch.setattr(core.kv, "view", view_then_slice)
            if read == "scroll":
                ids = [r.id for r in db.scroll("c", limit=1000)[0]]
            else:
                ids = [d.id for d in db.get_documents("c", A_IDS + B_IDS)]
        finally:
            db.worker.job_lock.release()
        assert sliced, "the hook in kv.view was not reached"
        assert ids == A_IDS, f"the dropped owner's {[p for p in ids if p in B_IDS]} came back"
