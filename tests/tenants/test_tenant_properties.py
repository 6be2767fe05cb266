"""Property test: the engine's in-memory tenant sets always equal the access lists in RocksDB
and a dict model, through upserts (with grant_to), grants, revokes, deletes, drops (their cleanup
held back, running, or finished), tenant re-creation and reopening the database.

A hypothesis state machine drives a real `Database` (flat index, real RocksDB directory);
after every step `assert_memory_matches_rocksdb` compares the memory image with the rows,
and the model's visible ids per tenant are compared with what the engine says each tenant
sees. Refused requests (another tenant's point, a revoke of an owner) must change nothing.
"""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from tenant_world import assert_memory_matches_rocksdb

from vecdb.engine import Database
from vecdb.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied

NAMES = ("a", "b", "c", "d")
DIM = 4
ids_st = st.lists(st.integers(0, 24), min_size=1, max_size=6, unique=True)
names_st = st.sampled_from(NAMES)


class TenantMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="vecdb-tenant-prop-")
        self.db = Database(self.dir, sync=False)
        self.db.create_collection("m", DIM, "l2", index="flat", multi_tenant=True)
        self.active: set[str] = set()
        self.dropping: set[str] = set()
        self.owner: dict[int, str] = {}
        self.grants: dict[int, set[str]] = {}
        self.held = False  # the test holds the worker's job lock: drop cleanups wait

    def _release(self) -> None:
        if self.held:
            self.db.worker.job_lock.release()
            self.held = False

    def teardown(self) -> None:
        self._release()
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _vec(self, n: int) -> np.ndarray:
        return np.arange(1, n * DIM + 1, dtype=np.float32).reshape(n, DIM)

    @initialize()
    def three_tenants(self) -> None:
        for name in NAMES[:3]:
            self.db.create_tenant("m", name)
            self.active.add(name)

    @rule(name=names_st)
    def create(self, name: str) -> None:
        try:
            self.db.create_tenant("m", name)
        except AlreadyExists:
            assert name in self.active or name in self.dropping
            return
        assert name not in self.active
        self.dropping.discard(name)  # its cleanup had ended
        self.active.add(name)

    @rule(owner=names_st, ids=ids_st, grant_to=st.lists(names_st, max_size=2, unique=True))
    def upsert(self, owner: str, ids: list[int], grant_to: list[str]) -> None:
        call = lambda: self.db.upsert("m", ids, self._vec(len(ids)), tenant=owner,  # noqa: E731
                                      grant_to=grant_to)  # fmt: skip
        if owner not in self.active or any(g not in self.active for g in grant_to):
            try:
                call()
            except NotFound:
                return
            raise AssertionError("an unknown tenant was accepted")
        if owner in grant_to:
            try:
                call()
            except InvalidArgument:
                return
            raise AssertionError("grant_to the owner was accepted")
        if any(self.owner.get(i, owner) != owner for i in ids):
            try:
                call()
            except PermissionDenied:
                return
            raise AssertionError("another tenant's point was replaced")
        assert call() == len(ids)
        for i in ids:
            kept = self.grants.get(i, set()) if self.owner.get(i) == owner else set()
            self.owner[i] = owner
            self.grants[i] = (kept | set(grant_to)) - {owner}

    @rule(ids=ids_st, tenant=names_st, owner=st.one_of(st.none(), names_st), on=st.booleans())
    def access(self, ids: list[int], tenant: str, owner: str | None, on: bool) -> None:
        method = self.db.grant if on else self.db.revoke
        try:
            n = method("m", ids, tenant=tenant, owner=owner)
        except (NotFound, PermissionDenied, InvalidArgument):
            return  # the model checks below that nothing changed
        assert tenant in self.active and (owner is None or owner in self.active)
        assert all(i in self.owner for i in ids)
        changed = 0
        for i in ids:
            if self.owner[i] == tenant:
                assert on, "an owner's access was revoked"
                continue
            before = tenant in self.grants[i]
            if before != on:
                changed += 1
            (self.grants[i].add if on else self.grants[i].discard)(tenant)
        assert n == changed

    @rule(ids=ids_st, tenant=st.one_of(st.none(), names_st))
    def delete(self, ids: list[int], tenant: str | None) -> None:
        try:
            n = self.db.delete("m", ids, tenant=tenant)
        except (NotFound, PermissionDenied):
            assert tenant is not None
            return
        if tenant is None:
            gone = [i for i in ids if i in self.owner]
        else:
            assert tenant in self.active
            seen = [i for i in ids if i in self._visible(tenant)]
            assert all(self.owner[i] == tenant for i in seen)
            gone = seen
        assert n == len(gone)
        for i in gone:
            self.owner.pop(i)
            self.grants.pop(i)

    @rule(name=names_st, hold=st.booleans())
    def drop(self, name: str, hold: bool) -> None:
        """With `hold`, the cleanup waits (the worker's job lock is held) until a release,
        so the steps in between see the dropped tenant's points hidden, not yet deleted."""
        if hold and not self.held:
            self.db.worker.job_lock.acquire()
            self.held = True
        try:
            self.db.drop_tenant("m", name)
        except NotFound:
            assert name not in self.active
            return
        self.active.discard(name)
        self.dropping.add(name)
        for i in [i for i, o in self.owner.items() if o == name]:
            self.owner.pop(i)
            self.grants.pop(i)
        for g in self.grants.values():
            g.discard(name)

    @rule()
    def release_cleanups(self) -> None:
        self._release()

    @rule()
    def finish_cleanups(self) -> None:
        self._release()
        self.db.optimize("m")
        self.dropping.clear()
        assert not self.db.stats("m")["tenants"]["dropping"]

    @rule()
    def reopen(self) -> None:
        self._release()
        self.db.close()
        self.db = Database(self.dir, sync=False)

    def _visible(self, name: str) -> set[int]:
        return {i for i, o in self.owner.items() if o == name or name in self.grants[i]}

    @invariant()
    def memory_matches_rocksdb_and_model(self) -> None:
        core = self.db.collections["m"].core
        with core.write_lock:  # the worker's drop cleanup changes both under this lock
            assert_memory_matches_rocksdb(core)
            ts = core.tenants
            for name in self.active:
                slots = ts.active(name).slots.array()
                got = set(core.points.ids_of(slots).tolist())
                assert got == self._visible(name), name
        assert self.db.count("m") == len(self.owner)


TenantMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_tenant_sets_follow_the_access_lists = TenantMachine.TestCase
