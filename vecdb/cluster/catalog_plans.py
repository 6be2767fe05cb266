"""The rules of changing the catalog: argument checks and one pure plan per change.

Owns validation of catalog arguments (names by the engine's own rules, specs by the engine's
validators, shard lists) and every change as a pure plan `(state) -> (result, Delta | None)`
that raises the change's error (NotFound, AlreadyExists, FailedPrecondition...) from the
state it is given. Backends run plans and store their Deltas; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vecdb.cluster.catalog_model import (
    MAX_SHARDS,
    SPEC_DEFAULTS,
    SPEC_KEYS,
    CatalogState,
    CollectionEntry,
    Delta,
    Plan,
    TenantPlacement,
)
from vecdb.engine import validate as v
from vecdb.engine.tenant_rules import not_multi_tenant
from vecdb.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, echo

# -- argument rules ------------------------------------------------------------------------


def check_spec(spec: object) -> dict[str, Any]:
    """A collection spec with the engine's rules, defaults filled in and values normalised
    (metric lower-case, empty index_params as None) so equal settings compare equal."""
    if not isinstance(spec, Mapping):
        raise InvalidArgument("spec must be a JSON object", field="spec")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise InvalidArgument(
            f"spec has unknown key {echo(unknown[0])} (known: {', '.join(SPEC_KEYS)})",
            field=f"spec.{unknown[0]}",
        )
    if "dim" not in spec:
        raise InvalidArgument("spec.dim is missing", field="dim")
    out = {**SPEC_DEFAULTS, **spec}
    index = out["index"]
    if index is not None and not isinstance(index, str):
        raise InvalidArgument(f"index {echo(index)} must be a string", field="index")
    params = v.check_index_params(out["index_params"])
    return {
        "dim": v.check_dim(out["dim"]),
        "metric": v.check_metric(out["metric"]).value,
        "id_type": v.check_id_type(out["id_type"]).value,
        "kind": v.check_kind(out["kind"]).value,
        "index": index,
        "index_params": params or None,
        "multi_tenant": v.check_flag("multi_tenant", out["multi_tenant"]),
    }


def check_addresses(addresses: object) -> tuple[str, ...]:
    """Shard addresses: 1..MAX_SHARDS distinct non-empty strings without spaces or commas."""
    if isinstance(addresses, (str, bytes)) or not isinstance(addresses, Sequence):
        raise InvalidArgument("shards must be a list of addresses", field="shards")
    if not 1 <= len(addresses) <= MAX_SHARDS:
        raise InvalidArgument(
            f"shards names {len(addresses)} addresses (expected 1-{MAX_SHARDS})", field="shards"
        )
    for i, a in enumerate(addresses):
        if not isinstance(a, str) or not a or any(c.isspace() or c == "," for c in a):
            raise InvalidArgument(f"shards[{i}] {echo(a)} is not an address", field=f"shards[{i}]")
    if len(set(addresses)) != len(addresses):
        raise InvalidArgument("shards names an address twice", field="shards")
    return tuple(addresses)


def check_shard_indexes(shards: object, count: int) -> frozenset[int]:
    """Shard indexes, each an int in [0, count)."""
    if isinstance(shards, (str, bytes)) or not isinstance(shards, Iterable):
        raise InvalidArgument("shards must be a list of shard indexes", field="shards")
    out = set()
    for i, s in enumerate(list(shards)):
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < count:
            raise InvalidArgument(
                f"shards[{i}] {echo(s)} is not a shard index (0-{count - 1})", field=f"shards[{i}]"
            )
        out.add(s)
    return frozenset(out)


def _collection(state: CatalogState, name: str) -> CollectionEntry:
    entry = state.collections.get(name)
    if entry is None:
        raise NotFound(f"collection {name!r} does not exist", field="collection")
    return entry


def _tenant(state: CatalogState, collection: str, tenant: str) -> TenantPlacement:
    _collection(state, collection)
    placement = state.tenants.get((collection, tenant))
    if placement is None:
        raise NotFound(
            f"tenant {tenant!r} does not exist in collection {collection!r}", field="tenant"
        )
    return placement


# -- plans: one per change -----------------------------------------------------------------


def plan_init_shards(addresses: tuple[str, ...]) -> Plan[CatalogState]:
    def plan(state: CatalogState) -> tuple[CatalogState, Delta | None]:
        if state.shards == addresses:
            return state, None
        if state.shards:
            raise FailedPrecondition(
                f"the catalog's shards are {list(state.shards)}; this process was given "
                f"{list(addresses)} (resharding is not supported: fix the configuration)",
                field="shards",
                reason="SHARDS_DIFFER",
            )
        delta = Delta(shards=addresses)
        return delta.apply(state, state.epoch + 1), delta

    return plan


def plan_create_collection(name: str, spec: dict[str, Any]) -> Plan[CollectionEntry]:
    def plan(state: CatalogState) -> tuple[CollectionEntry, Delta | None]:
        have = state.collections.get(name)
        if have is not None:
            for key in SPEC_KEYS:
                if have.spec.get(key) != spec[key]:
                    raise AlreadyExists(
                        f"collection {name!r} already exists with {key}={have.spec.get(key)!r} "
                        f"(asked {key}={spec[key]!r})",
                        field=key,
                    )
            return have, None
        entry = CollectionEntry(name, spec)
        return entry, Delta(put_collections={name: entry})

    return plan


def plan_drop_collection(name: str) -> Plan[None]:
    def plan(state: CatalogState) -> tuple[None, Delta | None]:
        _collection(state, name)
        gone = {key for key in state.tenants if key[0] == name}
        delta = Delta(del_collections={name}, put_dropped={name: state.epoch + 1})
        delta.del_tenants = gone
        return None, delta

    return plan


def plan_place_tenant(collection: str, tenant: str) -> Plan[TenantPlacement]:
    def plan(state: CatalogState) -> tuple[TenantPlacement, Delta | None]:
        entry = _collection(state, collection)
        have = state.tenants.get((collection, tenant))
        if have is not None:
            return have, None
        if not entry.spec.get("multi_tenant"):
            raise not_multi_tenant(collection, "tenant")
        if not state.shards:
            raise FailedPrecondition(
                "the catalog has no shards yet: a router sets them at start (init_shards)",
                field="shards",
            )
        homes = [0] * len(state.shards)
        for (c, _), p in state.tenants.items():
            if c == collection and p.home < len(homes):
                homes[p.home] += 1
        home = homes.index(min(homes))  # fewest tenants; ties: lowest index
        placement = TenantPlacement(home, frozenset({home}))
        return placement, Delta(put_tenants={(collection, tenant): placement})

    return plan


def plan_add_tenant_shards(collection: str, tenant: str, shards: object) -> Plan[TenantPlacement]:
    def plan(state: CatalogState) -> tuple[TenantPlacement, Delta | None]:
        have = _tenant(state, collection, tenant)
        wanted = check_shard_indexes(shards, len(state.shards))
        if wanted <= have.shards:
            return have, None
        placement = TenantPlacement(have.home, have.shards | wanted)
        return placement, Delta(put_tenants={(collection, tenant): placement})

    return plan


def plan_drop_tenant(collection: str, tenant: str) -> Plan[None]:
    def plan(state: CatalogState) -> tuple[None, Delta | None]:
        _tenant(state, collection, tenant)
        return None, Delta(del_tenants={(collection, tenant)})

    return plan
