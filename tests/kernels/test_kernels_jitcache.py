"""numba's cache of a kernel that inlines a kernel of another file follows edits to that file.

A copy of the vecdb package in a tmp dir gets two modules: `probe_callee.value()` and
`probe_caller.call()`, which calls it; both njit with cache=True. Each step runs in a fresh
interpreter, as a user does after `git pull`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import vecdb

CALLER = """
from numba import njit

from vecdb.kernels.probe_callee import value


@njit(cache=True)
def call():
    return value() * 10
"""

CALLEE = """
from numba import njit


@njit(cache=True)
def value():
    return {value}
"""

RUN = """
import json
from vecdb.kernels import jitcache
from vecdb.kernels.probe_caller import call
out = call()
hits = sum(call.stats.cache_hits.values())
print(json.dumps({"out": int(out), "hits": hits, "installed": jitcache.install()}))
"""


def _run(root: Path) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["PYTHONPATH"] = str(root)
    done = subprocess.run(
        [sys.executable, "-c", RUN], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_cached_caller_recompiles_when_its_callee_file_changes(tmp_path: Path) -> None:
    src = Path(vecdb.__file__).parent
    pkg = tmp_path / "vecdb"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "kernels" / "probe_caller.py").write_text(CALLER)
    (pkg / "kernels" / "probe_callee.py").write_text(CALLEE.format(value=1))

    first = _run(tmp_path)
    assert first == {"out": 10, "hits": 0, "installed": True}
    again = _run(tmp_path)
    assert again["out"] == 10 and again["hits"] >= 1  # unchanged sources: loaded from the cache

    (pkg / "kernels" / "probe_callee.py").write_text(CALLEE.format(value=2))
    after = _run(tmp_path)
    # numba alone stamps probe_caller.py by its own (unchanged) source and returns 10 here
    assert after["out"] == 20 and after["hits"] == 0
    assert _run(tmp_path) == {"out": 20, "hits": 1, "installed": True}
