"""Child process of the tenant crash tests: tenant writes forever, printing each acknowledgement.

Usage: python tenant_crash_writer.py DATA_DIR INDEX SEED. Collection "m" (multi-tenant) has
tenants t0..t5; point `i` is always owned by tenant t{i % 6}, and its vector is a pure function
of (id, generation), so the parent can rebuild the expected state from the acknowledgements.
INDEX "multivector" makes "m" a document collection: point `i` is then a document of
DOC_TOKENS tokens (`document_of`), written by upsert_documents.
Before each operation it prints "try OP GEN ..." and after the call returned (durable) "ack OP
GEN ...", where OP is up (upsert with grant_to), grant, revoke or del (delete by the owner),
followed by the owner, the ids and the other tenant(s) ("-" for none).
"""

from __future__ import annotations

import sys

import numpy as np

from vecdb.engine import Database
from vecdb.errors import AlreadyExists

DIM = 16
ID_RANGE = 600
TENANTS = [f"t{i}" for i in range(6)]


def vector_of(point_id: int, gen: int) -> np.ndarray:
    return np.random.default_rng([point_id, gen]).standard_normal(DIM).astype(np.float32)


DOC_TOKENS = 3


def document_of(point_id: int, gen: int) -> np.ndarray:
    """The tokens of document `point_id` at generation `gen` (its first row is `vector_of`)."""
    rest = np.random.default_rng([point_id, gen, 1]).standard_normal((DOC_TOKENS - 1, DIM))
    return np.vstack([vector_of(point_id, gen), rest.astype(np.float32)])


def owner_of(point_id: int) -> str:
    return TENANTS[point_id % len(TENANTS)]


def main() -> None:
    path, index, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    db = Database(path)
    docs = index == "multivector"
    try:
        if docs:
            db.create_collection("m", dim=DIM, metric="cosine", kind="multivector",
                                 multi_tenant=True, index_params={"K": 16})  # fmt: skip
        else:
            db.create_collection("m", dim=DIM, metric="l2", index=index, multi_tenant=True)
    except AlreadyExists:
        pass
    for t in TENANTS:
        try:
            db.create_tenant("m", t)
        except AlreadyExists:
            pass
    print("ready", flush=True)
    gen = seed * 1_000_000
    while True:
        gen += 1
        owner = TENANTS[int(rng.integers(len(TENANTS)))]
        pool = [i for i in range(ID_RANGE) if owner_of(i) == owner]
        ids = sorted(rng.choice(pool, size=int(rng.integers(1, 30)), replace=False).tolist())
        others = [t for t in TENANTS if t != owner]
        pick = sorted(rng.choice(others, size=int(rng.integers(0, 3)), replace=False).tolist())
        op = rng.random()
        if op < 0.04:
            db.optimize("m")  # index work, so kills also land inside it
            continue
        if op < 0.55:
            kind = "up"
        elif op < 0.75:
            kind, pick = "grant", pick or others[:1]
        elif op < 0.9:
            kind, pick = "revoke", pick or others[:1]
        else:
            kind = "del"
        line = f"{kind} {gen} {owner} {','.join(map(str, ids))} {','.join(pick) or '-'}"
        print(f"try {line}", flush=True)
        if kind == "up" and docs:
            db.upsert_documents("m", ids, [document_of(i, gen) for i in ids], tenant=owner,
                                grant_to=pick)  # fmt: skip
        elif kind == "up":
            vecs = np.stack([vector_of(i, gen) for i in ids])
            db.upsert("m", ids, vecs, tenant=owner, grant_to=pick)
        elif kind in ("grant", "revoke"):
            known = [r.id for r in db.get("m", ids, with_vectors=False, tenant=owner)]
            line = f"{kind} {gen} {owner} {','.join(map(str, known)) or '-'} {','.join(pick)}"
            print(f"try {line}", flush=True)
            for t in pick:
                if known:
                    (db.grant if kind == "grant" else db.revoke)("m", known, tenant=t, owner=owner)
        else:
            db.delete("m", ids, tenant=owner)
        print(f"ack {line}", flush=True)


if __name__ == "__main__":
    main()
