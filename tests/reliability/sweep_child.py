"""Child process of the corruption sweep: opens each damaged copy of a database, searches,
asks for the index work (quarantine and rebuild, if any) and searches again, and prints one
JSON line per step, so the parent sees a crash (SIGSEGV, SIGBUS) as the case it happened in.

Usage: python sweep_child.py CASES_JSON. Each case: {"name", "dir", "restore"} where
"restore" names a snapshot to restore first (or null).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from reliability_data import ALL, K, open_db, queries

from vecdb.engine.inspect import verify
from vecdb.errors import VecdbError


def outcome(fn: Any) -> dict[str, Any]:
    try:
        return {"ok": fn()}
    except VecdbError as exc:
        return {"error": type(exc).__name__, "code": exc.code, "message": exc.message}
    except Exception as exc:  # outside the error tree: the parent counts it as a failure
        return {"error": type(exc).__name__, "code": "ESCAPED", "message": str(exc)[:300]}


def ids(db: Any) -> list[list[int]]:
    res = db.search("c", queries(), k=K, params=ALL)
    return np.asarray(res.ids).tolist()  # type: ignore[no-any-return]


def run(case: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"case": case["name"]}
    checked = outcome(lambda: verify(Path(case["dir"])))  # `vecdb inspect --verify`, first
    out["verify_ok"] = checked.get("ok", {}).get("ok", False)
    out["verify_bad"] = [f["file"] for f in checked.get("ok", {}).get("files", []) if not f["ok"]]
    opened = outcome(lambda: open_db(Path(case["dir"])))
    if "error" in opened:
        out["open"] = opened
        return out
    db = opened["ok"]
    try:
        if case.get("restore"):
            out["restore"] = outcome(lambda: db.restore_snapshot("c", case["restore"]) or True)
        out["search"] = outcome(lambda: ids(db))
        out["degraded"] = outcome(lambda: db.stats("c")["index_status"]["degraded"])
        out["optimize"] = outcome(lambda: db.optimize("c", timeout=60) or True)
        out["after"] = outcome(lambda: ids(db))
        out["count"] = outcome(lambda: db.count("c"))
    finally:
        out["close"] = outcome(lambda: db.close() or True)
    return out


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    for case in cases:
        print(json.dumps({"start": case["name"]}), flush=True)
        print(json.dumps(run(case)), flush=True)


if __name__ == "__main__":
    main()
