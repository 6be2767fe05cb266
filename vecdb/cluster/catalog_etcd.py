"""The catalog in etcd: compare-and-swap changes, a watched cache, reconnection.

Every change is one etcd transaction that compares the epoch key's mod_revision with the one
the change was planned on, writes the change and bumps the epoch; a lost race gets the
prefix as it now stands from the same transaction (its failure branch reads it) and plans
again on that (at most MAX_CAS_ATTEMPTS times), with no second round trip. A thread watches the prefix and keeps the cache
(`state()`) current; when etcd goes away the cache stays, changes raise `CatalogUnavailable`
within `timeout` per endpoint, and the thread reconnects (re-reading everything, then watching
from the revision it read) when etcd is back. An etcd whose revision went back (restored
from a snapshot, or replaced by an empty one) is reloaded whole and handed to the watchers.
No lease is ever taken: no process's liveness depends on etcd. Change the catalog only
through this class: a key edited by hand (etcdctl) does not bump the epoch, so it reaches
`state()` with the next full read but watchers see it only with the next change. Owns
only etcd I/O: the key layout is `catalog_keys`, the rules of each change `catalog_plans`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import etcd3
import grpc
from etcd3 import etcdrpc
from etcd3.client import Endpoint
from etcd3.utils import prefix_range_end

from vecdb.cluster.catalog_base import Catalog
from vecdb.cluster.catalog_keys import Parts, check_prefix, delta_ops, dumps
from vecdb.cluster.catalog_model import (
    EMPTY_STATE,
    CatalogState,
    CatalogUnavailable,
    Delta,
    Plan,
    T,
)
from vecdb.errors import InvalidArgument, Unavailable, VecdbError, echo

log = logging.getLogger("vecdb.cluster.catalog")

MAX_CAS_ATTEMPTS = 32  # lost races one change retries before giving up (Unavailable)
DEFAULT_TIMEOUT_S, MIN_TIMEOUT_S, MAX_TIMEOUT_S = 2.0, 0.05, 60.0  # per etcd call
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 1.0  # the watch thread's backoff while etcd is away
MAX_MESSAGE_BYTES = 256 << 20  # a large catalog read in one range response
# A hung etcd (SIGSTOP, a partition dropping packets) is noticed on the idle watch stream by
# a keepalive ping every KEEPALIVE_TIME_MS unanswered for PING_TIMEOUT_MS: the watch breaks,
# `connected` turns False (shards then refuse direct routes) and misses stop asking etcd.
KEEPALIVE_TIME_MS, PING_TIMEOUT_MS = 10_000, 5_000


def _channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Reconnect quickly when etcd returns (gRPC's default backoff grows to two minutes).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
        # grpcio (1.85 here) waits this long for a ping's answer, whatever keepalive_timeout_ms
        # says: at its 60 s default a frozen etcd went unnoticed for 70 s.
        ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
    ]


_DELETE = 1  # mvccpb.Event.DELETE


def parse_endpoints(endpoints: str) -> list[tuple[str, int]]:
    """The (host, port) pairs of "host:port[,host:port...]"; InvalidArgument naming `etcd`."""
    out = []
    for part in str(endpoints).split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(
                f"etcd endpoint {echo(part)} is invalid: use host:port[,host:port...]",
                field="etcd",
            )
        out.append((host.strip("[]"), int(port)))
    return out


class EtcdCatalog(Catalog):
    """The catalog in etcd at `endpoints` ("host:port[,host:port...]"), under `prefix`.

    Construction never fails on an unreachable etcd: the cache starts empty and the watch
    thread keeps trying (call `refresh()` to insist on a read).
    """

    def __init__(
        self, endpoints: str, *, prefix: str = "/vecdb", timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        super().__init__()
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not MIN_TIMEOUT_S <= timeout <= MAX_TIMEOUT_S
        ):
            raise InvalidArgument(
                f"timeout {echo(timeout)} is out of range ({MIN_TIMEOUT_S}-{MAX_TIMEOUT_S} s)",
                field="timeout",
            )
        self.endpoints = str(endpoints)
        self.prefix = check_prefix(prefix)
        self.timeout = float(timeout)
        self._addresses = parse_endpoints(endpoints)
        self._clients = [self._connect(h, p) for h, p in self._addresses]
        self._current = 0  # index of the endpoint that answered last
        self._dir = (self.prefix + "/").encode()
        self._epoch_key = self.prefix + "/epoch"
        self._revision = 0  # etcd revision the cache reflects
        self._epoch_mod = 0  # mod_revision of the epoch key at that revision (0: absent)
        self._change_lock = threading.Lock()  # this process's changes one at a time
        # Full reads and installs in order: a full read older than the cache means etcd's
        # revision went back, never an interleaving (held across the read's etcd call).
        self._install_lock = threading.RLock()
        self._closed = threading.Event()
        self._stream: Any = None  # the watch call, cancelled by close()
        self.connected = False  # the watch is up (False while etcd is away: the cache may lag)
        self.lost_races = 0  # changes planned again because another writer came first
        try:
            self.refresh()
        except CatalogUnavailable as e:
            log.warning("%s", e.message)
        self._thread = threading.Thread(target=self._watch_loop, name="vecdb-catalog", daemon=True)
        self._thread.start()

    def _connect(self, host: str, port: int) -> Any:
        endpoint = Endpoint(host, port, secure=False, time_retry=0, opts=_channel_options())
        return etcd3.MultiEndpointEtcd3Client(endpoints=[endpoint], timeout=self.timeout)

    # -- etcd calls --------------------------------------------------------------------

    def _call(self, fn: Callable[[Any], T]) -> T:
        """`fn(client)` on the endpoint that answered last, then the others; all failing:
        CatalogUnavailable naming each endpoint's failure."""
        if self._closed.is_set():
            raise Unavailable("the catalog is closed", reason="CATALOG_CLOSED")
        failures = []
        for i in range(len(self._clients)):
            index = (self._current + i) % len(self._clients)
            try:
                out = fn(self._clients[index])
            except (etcd3.exceptions.Etcd3Exception, grpc.RpcError, ValueError) as e:
                host, port = self._addresses[index]
                failures.append(f"{host}:{port}: {self._describe(e)}")
                continue
            self._current = index
            return out
        raise CatalogUnavailable(self.endpoints, "; ".join(failures))

    def _describe(self, e: Exception) -> str:
        if isinstance(e, etcd3.exceptions.ConnectionTimeoutError):
            return f"no answer within {self.timeout:g} s"
        if isinstance(e, etcd3.exceptions.ConnectionFailedError):
            return "connection failed"
        if isinstance(e, grpc.RpcError):
            return f"{e.code().name}: {e.details()}"  # e.g. NOSPACE: database space exceeded
        return str(e) or type(e).__name__

    def _read(self) -> tuple[CatalogState, int, int]:
        """Everything under the prefix (one linearizable range read): (state, revision,
        mod_revision of the epoch key)."""
        response = self._call(lambda c: c.get_prefix_response(self._dir))
        pairs = ((kv.key, kv.value, kv.mod_revision) for kv in response.kvs)
        return self._parse(pairs, response.header.revision)

    def _parse(
        self, pairs: Iterable[tuple[bytes, bytes, int]], revision: int
    ) -> tuple[CatalogState, int, int]:
        """(state, revision, epoch key's mod_revision) from the prefix's (key, value,
        mod_revision) triples as of `revision`."""
        parts = Parts(EMPTY_STATE)
        epoch_mod = 0
        epoch_key = self._epoch_key.encode()
        for key, value, mod in pairs:
            self._apply_key(parts, key, value)
            if key == epoch_key:
                epoch_mod = mod
        return parts.freeze(), revision, epoch_mod

    def _apply_key(self, parts: Parts, key: bytes, value: bytes | None) -> None:
        rel = key[len(self._dir) :].decode("utf-8", "replace")
        try:
            parts.apply(rel, value)
        except (ValueError, TypeError, KeyError) as e:  # a foreign or damaged key: skip it
            log.warning("catalog key %s%s ignored: %s", self.prefix, "/" + rel, e)

    def _install(
        self, state: CatalogState, revision: int, epoch_mod: int, full: bool = False
    ) -> bool:
        """Make `state` (as of `revision`) the cache unless the cache is newer. A
        `full` read also replaces a cache of the same revision (it may have missed keys
        written by hand, which do not bump the epoch), and one of an older revision: etcd
        went back (restored or replaced), so the read is the truth; the watchers get it
        whatever its epoch and the watch starts again from its revision. True if it went
        back (for `_notify_installed`, called after the install lock is released)."""
        with self._install_lock, self._state_lock:
            went_back = full and revision < self._revision
            if not went_back and (
                revision < self._revision or (revision == self._revision and not full)
            ):
                return False
            old = self._revision
            self._state, self._revision, self._epoch_mod = state, revision, epoch_mod
        if went_back:
            log.warning("etcd revision went back %d -> %d (etcd restored or replaced): "
                        "catalog reloaded", old, revision)  # fmt: skip
            stream = self._stream
            if stream is not None:
                stream.cancel()  # a watch from the old revision would wait for the future
        return went_back

    def _notify_installed(self, went_back: bool) -> None:
        if went_back:
            with self._notify_lock:
                self._delivered = -1  # hand the reloaded state over, whatever its epoch
        self._notify()

    # -- the interface -------------------------------------------------------------------

    def refresh(self) -> CatalogState:
        return self._read_and_install()[0]

    def _change(self, plan: Plan[T]) -> T:
        with self._change_lock:
            with self._state_lock:
                state, epoch_mod = self._state, self._epoch_mod
            fresh = False
            for _ in range(MAX_CAS_ATTEMPTS):
                try:
                    result, delta = plan(state)
                except VecdbError:
                    if fresh:
                        raise
                    # Judged on a cache that may be stale: read, plan again.
                    state, _, epoch_mod = self._read_and_install()
                    fresh = True
                    continue
                ok, revision, now = self._commit(state, epoch_mod, delta)
                if ok:
                    if delta is not None:
                        new = delta.apply(state, state.epoch + 1)
                        self._notify_installed(self._install(new, revision, revision))
                    return result
                self.lost_races += 1
                if now is None:  # the prefix is gone (etcd emptied): read it the long way
                    state, _, epoch_mod = self._read_and_install()
                else:
                    state, _, epoch_mod = now
                    self._notify_installed(self._install(*now, full=True))
                fresh = True
            raise Unavailable(
                f"the catalog changed under this change {MAX_CAS_ATTEMPTS} times in a row "
                "(too many concurrent catalog changes): retry",
                reason="CATALOG_CONTENDED",
                retry_after=0.1,
            )

    def _read_and_install(self) -> tuple[CatalogState, int, int]:
        with self._install_lock:
            state, revision, epoch_mod = self._read()
            went_back = self._install(state, revision, epoch_mod, full=True)
        self._notify_installed(went_back)
        return state, revision, epoch_mod

    def _commit(
        self, state: CatalogState, epoch_mod: int, delta: Delta | None
    ) -> tuple[bool, int, tuple[CatalogState, int, int] | None]:
        """One transaction: if the epoch key is still at `epoch_mod`, write `delta` and the
        next epoch: (True, new revision, None); a no-op (delta None) only checks. If it is
        not, the transaction's failure branch reads the whole prefix: (False, 0, what `_read`
        would have returned), in the same round trip (None if the prefix is empty)."""

        def txn(client: Any) -> tuple[bool, int, tuple[CatalogState, int, int] | None]:
            tx = client.transactions
            compare = [tx.mod(self._epoch_key) == epoch_mod]
            failure = [tx.get(self._dir, range_end=prefix_range_end(self._dir))]
            success = [] if delta is None else delta_ops(tx, self.prefix, delta)
            if delta is not None:
                success.append(tx.put(self._epoch_key, dumps(state.epoch + 1)))
                success.append(tx.get(self._epoch_key))
            ok, responses = client.transaction(compare=compare, success=success, failure=failure)
            if not ok:
                (rows,) = responses
                if not rows:
                    return False, 0, None
                revision = rows[0][1].response_header.revision
                pairs = ((meta.key, value, meta.mod_revision) for value, meta in rows)
                return False, 0, self._parse(pairs, revision)
            if delta is None:
                return True, 0, None
            (_, meta), *_ = responses[-1]
            return True, int(meta.mod_revision), None

        return self._call(txn)

    # -- the watch -----------------------------------------------------------------------

    def _watch_loop(self) -> None:
        """Keep the cache current: watch the prefix; when the stream breaks, re-read
        everything and watch again from there, backing off while etcd is away."""
        backoff = RECONNECT_MIN_S
        while not self._closed.is_set():
            try:
                self._read_and_install()
                self._watch_stream()
            except (CatalogUnavailable, grpc.RpcError) as e:
                if self.connected:
                    why = e.message if isinstance(e, CatalogUnavailable) else self._describe(e)
                    log.warning("catalog watch on %s lost: %s; reconnecting", self.endpoints, why)
            except Exception:  # never let the thread die: the cache would freeze
                log.exception("catalog watch failed")
            # A stream that was up retries at once; etcd still away: back off.
            backoff = RECONNECT_MIN_S if self.connected else min(backoff * 2, RECONNECT_MAX_S)
            self.connected = False
            self._closed.wait(backoff)

    def _watch_stream(self) -> None:
        """One watch stream from the cached revision + 1, until it ends."""
        client = self._clients[self._current]
        start = self._revision + 1
        request = etcdrpc.WatchRequest(
            create_request=etcdrpc.WatchCreateRequest(
                key=self._dir,
                range_end=etcd3.utils.prefix_range_end(self._dir),
                start_revision=start,
            )
        )
        done = threading.Event()

        def requests() -> Iterator[Any]:
            yield request
            done.wait()  # keep the stream open until it ends or the catalog closes

        stream = etcdrpc.WatchStub(client.channel).Watch(requests(), metadata=client.metadata)
        self._stream = stream
        try:
            if self._closed.is_set() or self._revision < start - 1:
                return  # closed, or etcd went back meanwhile: the loop re-reads
            for response in stream:
                if response.created and not self.connected:
                    self.connected = True
                    log.info("catalog watch on %s%s/ from revision %d", self.endpoints,
                             self.prefix, start)  # fmt: skip
                if response.compact_revision or response.canceled:
                    return  # history gone: the loop re-reads everything
                if response.events:
                    self._apply_events(response.events)
        except grpc.RpcError:
            if not self._closed.is_set():
                raise
        finally:
            done.set()
            stream.cancel()

    def _apply_events(self, events: Any) -> None:
        with self._install_lock:  # no full read installs between the snapshot and the install
            self._apply_events_locked(events)
        self._notify()

    def _apply_events_locked(self, events: Any) -> None:
        with self._state_lock:
            parts = Parts(self._state)
            revision, epoch_mod = self._revision, self._epoch_mod
        newest = revision
        for event in events:
            kv = event.kv
            if kv.mod_revision <= revision:
                continue  # already in the cache (our own change, or the read we started at)
            value = None if event.type == _DELETE else kv.value
            self._apply_key(parts, kv.key, value)
            if kv.key == self._epoch_key.encode():
                epoch_mod = 0 if value is None else kv.mod_revision
            newest = max(newest, kv.mod_revision)
        if newest > revision:
            self._install(parts.freeze(), newest, epoch_mod)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        self._thread.join(timeout=5)
        with self._notify_lock:
            self._callbacks.clear()
        for client in self._clients:
            try:
                client.close()
            except Exception:  # closing must not fail
                log.exception("closing the etcd client failed")
