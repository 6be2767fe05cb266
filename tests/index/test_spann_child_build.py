"""A bulk build in a child process (`vecdb.index.spann.child`): the same index as a build in
this process, persisted and reopened; the child's errors, a caller that gives up and a parent
that dies all end the child and leave no exchange file; the size threshold's setting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from test_spann_support import assert_no_orphans, assert_tree_consistent, clustered

from vecdb.errors import Internal
from vecdb.index.spann import child, open_spann

N, D, K = 4_000, 16, 10
PARAMS = {"threads": 1, "head_fraction": 0.05}


def _children() -> list[int]:
    """Live child build processes of this process (zombies and other children, e.g. a
    session's servers, not counted)."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        text = Path(f"/proc/self/task/{task}/children").read_text()
        pids += [int(p) for p in text.split()]
    return [p for p in pids if _alive(p) and _is_build(p)]


def _is_build(pid: int) -> bool:
    try:
        return b"run_child" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _build(directory: Path, x: np.ndarray, mib: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv(child.ENV, mib)
    idx, _ = open_spann(D, "l2", PARAMS, directory)
    idx.build(np.arange(N), x)
    return idx


def test_child_build_needs_disk_room_for_its_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build large enough for a child runs in process when this disk could not hold the
    child's temporary input twice over (here: a build of more vectors than the disk has room
    for); with room, it goes to the child."""
    monkeypatch.setenv(child.ENV, "0")
    free = shutil.disk_usage(tmp_path).free
    assert child.use_child(1_000, 16, tmp_path)
    too_many = free // (4 * 16 + 8) + 1  # one vector more than one copy of the input fits
    assert not child.use_child(too_many, 16, tmp_path)
    assert child.use_child(too_many, 16)  # no directory given: the size rule alone


def test_child_build_equals_in_process_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thread and one seed: the child's index answers exactly like this process's, its
    files reopen, and the exchange files are gone."""
    x = clustered(N, D, seed=3)
    q = clustered(50, D, seed=4)
    monkeypatch.delenv(child.ENV, raising=False)
    assert not child.use_child(N, D)  # under the default 64 MiB...
    assert not child.use_child(16_383, 1024)
    assert child.use_child(16_384, 1024)  # ...which a 64 MiB build reaches
    assert child.use_child(390_000, 50)  # GloVe-50 (74 MiB) is built in a child
    here = _build(tmp_path / "here", x, "off", monkeypatch)
    there = _build(tmp_path / "child", x, "0", monkeypatch)  # ...0 sends every build to a child
    a, b = here.search(q, K, {"max_postings": 8}), there.search(q, K, {"max_postings": 8})
    np.testing.assert_array_equal(a.slots, b.slots)
    np.testing.assert_array_equal(a.distances, b.distances)
    assert here.stats()["heads"] == there.stats()["heads"]
    assert_no_orphans(there, set(range(N)))
    assert_tree_consistent(there, set(range(N)))
    assert not list((tmp_path / "child").glob("build.*"))
    there.checkpoint(1)
    there.close()
    reopened, seq = open_spann(D, "l2", PARAMS, tmp_path / "child")
    assert seq == 1
    np.testing.assert_array_equal(reopened.search(q, K, {"max_postings": 8}).slots, a.slots)
    reopened.add(np.arange(N, N + 500), clustered(500, D, seed=5))  # grows like any index
    assert_no_orphans(reopened, set(range(N + 500)))
    reopened.close()
    here.close()


def test_child_runs_this_process_vecdb_whatever_the_working_directory_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build started from a directory holding another `vecdb` package (a checkout, an
    old worktree) runs this process's own code in the child, not that one."""
    other = tmp_path / "elsewhere"
    (other / "vecdb").mkdir(parents=True)
    (other / "vecdb" / "__init__.py").write_text('raise ImportError("not this vecdb")\n')
    monkeypatch.chdir(other)
    x = clustered(N, D, seed=3)
    idx = _build(tmp_path / "index", x, "0", monkeypatch)
    assert idx.search(x[:5], 1, {"max_postings": 8}).slots[:, 0].tolist() == list(range(5))
    idx.close()


def test_child_killed_raises_internal_and_keeps_the_old_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that dies without a word: Internal with its exit status; the index published
    before stays whole and no exchange file is left."""
    x = clustered(N, D, seed=3)
    idx = _build(tmp_path, x, "0", monkeypatch)
    before = idx.search(x[:20], K, {"max_postings": 8}).slots
    monkeypatch.setenv("VECDB_KILL_AT", "build_child")
    with pytest.raises(Internal, match="exited with status -9"):
        idx.build(np.arange(N), x[::-1].copy())
    np.testing.assert_array_equal(idx.search(x[:20], K, {"max_postings": 8}).slots, before)
    assert not list(tmp_path.glob("build.*")) and not _children()
    idx.close()


def test_child_error_comes_back_with_its_type_and_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error raised in the child is raised in the parent with its message."""
    idx = _build(tmp_path, clustered(N, D, seed=3), "0", monkeypatch)
    # the child reads the setting too, at its start: an invalid value fails there
    monkeypatch.setenv("VECDB_KILL_AT", "not-a-point:x")
    with pytest.raises(Internal, match="ValueError: invalid literal for int"):
        idx.build(np.arange(N), clustered(N, D, seed=6))
    assert not list(tmp_path.glob("build.*")) and not _children()
    idx.close()


def test_caller_that_gives_up_stops_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A progress callback that raises (a closing collection does) kills the child at once."""
    monkeypatch.setenv(child.ENV, "0")
    idx, _ = open_spann(D, "l2", PARAMS, tmp_path)
    seen: list[int] = []

    def give_up(phase: str, done: int, total: int) -> None:
        seen.extend(_children())
        raise KeyboardInterrupt("closing")

    with pytest.raises(KeyboardInterrupt, match="closing"):
        idx.build(np.arange(N), clustered(N, D, seed=3), give_up)
    assert len(seen) == 1 and not _alive(seen[0])
    assert not list(tmp_path.glob("build.*"))
    idx.close()


def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent SIGKILLed while its child builds: the child exits too."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import numpy as np
        from vecdb.index.spann import open_spann
        def progress(phase, done, total):
            kids = []
            for t in os.listdir("/proc/self/task"):
                kids += open(f"/proc/self/task/{{t}}/children").read().split()
            print(" ".join(kids), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        idx, _ = open_spann({D}, "l2", {PARAMS!r}, {str(tmp_path)!r})
        x = np.random.default_rng(0).normal(size=({N}, {D})).astype(np.float32)
        idx.build(np.arange({N}), x, progress)
        """
    )
    env = dict(os.environ, **{child.ENV: "0"})
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == -9, out.stderr
    (pid,) = (int(p) for p in out.stdout.split())
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
