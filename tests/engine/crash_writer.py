"""Child process of the crash tests: upserts and deletes forever, printing each acknowledgement.

Usage: python crash_writer.py DATA_DIR INDEX SEED. Every point's vector and payload are a pure
function of (id, generation), so the parent can check exact contents after a SIGKILL.
Before each operation it prints its intent ("try-ack G ids" / "try-del G ids"); after the
call returned (durable) it prints "ack G id,id,..." or "del G id,...". A kill between the two
leaves one operation in flight, which may or may not have reached the disk.
"""

from __future__ import annotations

import sys

import numpy as np

from vecdb.engine import Database
from vecdb.errors import AlreadyExists

DIM = 16
ID_RANGE = 3000


def vector_of(point_id: int, gen: int) -> np.ndarray:
    return np.random.default_rng([point_id, gen]).standard_normal(DIM).astype(np.float32)


def main() -> None:
    path, index, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    db = Database(path)
    try:
        db.create_collection("c", dim=DIM, metric="l2", index=index)
    except AlreadyExists:
        pass
    print("ready", flush=True)
    gen = seed * 1_000_000
    while True:
        gen += 1
        if rng.random() < 0.05:
            # Index work (bulk build, buffer drain, checkpoint) so kills also land inside it.
            db.optimize("c")
            continue
        if rng.random() < 0.15:
            ids = rng.choice(ID_RANGE, size=int(rng.integers(1, 20)), replace=False).tolist()
            print(f"try-del {gen} {','.join(map(str, ids))}", flush=True)
            db.delete("c", ids)
            print(f"del {gen} {','.join(map(str, ids))}", flush=True)
            continue
        ids = rng.choice(ID_RANGE, size=int(rng.integers(1, 200)), replace=False).tolist()
        vecs = np.stack([vector_of(i, gen) for i in ids])
        print(f"try-ack {gen} {','.join(map(str, ids))}", flush=True)
        db.upsert("c", ids, vecs, [{"gen": gen, "id": i} for i in ids])
        print(f"ack {gen} {','.join(map(str, ids))}", flush=True)


if __name__ == "__main__":
    main()
