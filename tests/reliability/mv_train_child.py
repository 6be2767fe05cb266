"""Child process of the codebook-training kill-point test: writes documents, trains, writes
more, removes enough to force a retraining, trains again, printing every acknowledgement.

Usage: python mv_train_child.py DATA_DIR (with VECDB_KILL_AT naming the point). Documents are
a pure function of their id (`docs_of`), so the parent checks exact contents after the kill.
Lines: "try-up a,b,..." / "try-del a,b,..." before a write, "ack-up ..." / "ack-del ..." after
it returned, "trained G" after an optimize returned with generation G, "done" at the end.
(The worker may start a training by itself as soon as the delete commits: a kill there
leaves that delete in flight.)
"""

from __future__ import annotations

import sys

from oracles import clustered_documents

from vecdb.engine import Database

DIM = 16
N_FIRST, N_SECOND = 240, 80  # documents before the first training, then before the second
DOCS = clustered_documents(N_FIRST + N_SECOND, DIM, seed=41, tokens=(4, 12))
REMOVED = list(range(0, N_FIRST, 2)) + list(range(1, 121, 2))  # 180 of 320: retrain is due
# The worker never trains or checkpoints on its own before an optimize asks it to: the
# occurrence counts of the kill points are the trainings' and checkpoints' of this script.
SETTINGS = {"idle_seconds": 3600.0}
PARAMS = {"K": 32, "min_train_tokens": 100_000_000, "rerank_tier": "int8"}


def main() -> None:
    db = Database(sys.argv[1], settings=SETTINGS)
    db.create_collection("d", DIM, "cosine", kind="multivector", index_params=PARAMS)
    for lo in range(0, N_FIRST, 60):
        ids = list(range(lo, lo + 60))
        print("try-up " + ",".join(map(str, ids)), flush=True)
        db.upsert_documents("d", ids, [DOCS[i] for i in ids], payloads=[{"i": i} for i in ids])
        print("ack-up " + ",".join(map(str, ids)), flush=True)
    db.optimize("d")
    print(f"trained {db.stats('d')['index']['generation']}", flush=True)
    ids = list(range(N_FIRST, N_FIRST + N_SECOND))
    print("try-up " + ",".join(map(str, ids)), flush=True)
    db.upsert_documents("d", ids, [DOCS[i] for i in ids], payloads=[{"i": i} for i in ids])
    print("ack-up " + ",".join(map(str, ids)), flush=True)
    print("try-del " + ",".join(map(str, REMOVED)), flush=True)
    db.delete("d", REMOVED)
    print("ack-del " + ",".join(map(str, REMOVED)), flush=True)
    db.optimize("d")
    print(f"trained {db.stats('d')['index']['generation']}", flush=True)
    db.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
