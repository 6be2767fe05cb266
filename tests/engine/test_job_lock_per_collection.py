"""A snapshot, restore or drop of one collection waits for that collection's index job only:
while the worker runs another collection's job they go ahead. Before, one lock for every
collection made a snapshot of a 1-point collection wait 8.4 s for another's bulk build (and a
drop or snapshot wait as long as any build of any collection)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vecdb
from vecdb.engine import maintenance

WAIT_S = 20  # far above what the calls take, far below a test timeout


def test_other_collections_calls_do_not_wait_for_a_running_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    real_drain = maintenance.drain

    def slow_drain(coll: Any) -> None:
        if coll.name == "busy":  # the job that runs long: held until the test says
            started.set()
            assert release.wait(WAIT_S)
        real_drain(coll)

    monkeypatch.setattr(maintenance, "drain", slow_drain)
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    with vecdb.connect(str(tmp_path / "db")) as c:
        for name in ("busy", "small", "gone"):
            c.create_collection(name, dim=8, metric="l2")
            c.upsert(name, list(range(50)), x)
        c.optimize("busy", wait=False)
        assert started.wait(WAIT_S)  # the worker is inside busy's job now
        done: list[str] = []

        def others() -> None:
            snap = c.create_snapshot("small")
            c.upsert("small", [99], x[:1])
            c.restore_snapshot("small", snap.name)
            c.drop_collection("gone")
            done.append("ok")

        t = threading.Thread(target=others)
        t.start()
        t.join(WAIT_S)
        finished = not t.is_alive()
        release.set()
        t.join()
        assert finished and done == ["ok"]
        assert c.count("small") == 50 and not c.collection_exists("gone")
        c.optimize("busy")
        assert c.count("busy") == 50
