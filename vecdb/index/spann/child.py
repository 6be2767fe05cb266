"""A large bulk build run in a child process, so the long-running process never holds its
temporaries.

A build leaves the memory of a long-running process well above what a fresh process needs
for the same index (70,000 x 1024: 38.9 MiB after the build vs 25.0 for a fresh open): not
index data but the allocators' leftovers: CPython's small-object arenas pinned by a few
long-lived objects among the build's temporaries, and glibc heap fragmentation that
`malloc_trim` cannot return. Closing and reopening in the same process does not undo it. So
a build of at least `VECDB_BUILD_CHILD_MIB` MiB of float32 vectors runs its passes 1-6
(`build._passes`) in a child Python process, and the parent loads the result as a fresh
open does. The default, 64 MiB, takes GloVe-50 (74 MiB) to a child too: in process its
build left 21.7 MiB against 17.5 for a fresh open (1.24), in a child 19.1 (1.09), build time
within the machine's noise (PARAMS.md).

Protocol (all files in the index directory, named `build.<gen>.<what>.tmp`, removed when
the build ends, however it ends; `persist.clean_directory` removes leftovers of a crash):
the parent writes the slots as an .npy file, and the vectors too unless the engine gathered
them in a staged file (`staging`: an unnamed file the child inherits as a descriptor, so the
input is written once); the child memory-maps both (file pages, not anonymous memory). The
parent starts `python -c <run_child()> <json>`. The child
writes the posting file `postings.<gen>.bin` itself, then `build.<gen>.heads.tmp` (the head
graph, framed as `heads.<n>.bin`) and `build.<gen>.state.tmp` (table, tree, quantizer and
counters, framed as `state.<n>.bin`). On stdout it reports one JSON line per progress step,
then one `done` or `error` line. The parent forwards each progress step to its caller (a
caller that raises, e.g. a closing collection, kills the child), maps an `error` line back
to the vecdb error the child raised (`Internal` for anything else, with the child's message)
and opens the posting file at the length the child reports. The child exits when its stdin
closes, so it dies with the parent. Its stderr goes to `build.<gen>.log.tmp`, whose tail is
in the error when the child dies without reporting. A large drain into a built index
runs in a child the same way (`drain_child`, which reuses this protocol).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from subprocess import PIPE, Popen
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb import errors
from vecdb.allocator import tune_allocator
from vecdb.errors import Internal, InvalidArgument
from vecdb.index import room
from vecdb.index.base import Progress
from vecdb.index.heads import ClusterTree
from vecdb.index.params import BuildParams
from vecdb.index.spann import staging
from vecdb.index.spann.bitcodes import load_codec
from vecdb.index.spann.headgraph import HeadGraph
from vecdb.index.spann.killpoints import kill_point
from vecdb.index.spann.persist import load_heads, load_state, save_heads, save_state
from vecdb.index.spann.postings import PostingFile
from vecdb.index.spann.state import SpannState, file_path, head_space, new_state
from vecdb.index.spann.table import BlockTable

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
ENV = "VECDB_BUILD_CHILD_MIB"
DEFAULT_MIB = 64.0  # builds of at least this many MiB of float32 vectors run in a child
MAX_MIB = float(1 << 20)  # bounds of the setting (PARAMS.md); "off" never uses a child
LOG_TAIL = 2000  # characters of the child's stderr kept in an error
INPUT_ROOM = 2  # free disk, in multiples of the temporary input, a child build needs


def child_min_bytes() -> int | None:
    """The smallest build (float32 bytes of its vectors) run in a child; None: never."""
    return env_min_bytes(ENV, DEFAULT_MIB)


def env_min_bytes(env: str, default_mib: float) -> int | None:
    """A child-process threshold set in MiB by the environment variable `env` (empty or
    "default": `default_mib`; "off": None, never; else a number of MiB in [0, MAX_MIB]),
    in bytes. Shared by the build child and the drain child (`drain_child`)."""
    raw = os.environ.get(env, "").strip().lower()
    if raw in ("", "default"):
        return int(default_mib * 2**20)
    if raw == "off":
        return None
    try:
        mib = float(raw)
    except ValueError:
        mib = -1.0
    if not 0.0 <= mib <= MAX_MIB:
        raise InvalidArgument(
            f"{env} must be off or a number of MiB in [0, {MAX_MIB:g}], got {raw!r}",
            field=env,
        )
    return int(mib * 2**20)


def use_child(
    n: int, dim: int, directory: Path | None = None, output: int = 0, staged: bool = False
) -> bool:
    """Whether a build of n x dim vectors runs in a child process: large enough, and (given
    the index `directory`) its disk has room for the build's `output` bytes and the child's
    temporary input, its float32 vectors and int64 slots, INPUT_ROOM times over (once less
    for vectors already `staged` on that disk); else the build runs in process (the child is
    a memory optimisation and must not be what fills a disk)."""
    least = child_min_bytes()
    if least is None or n == 0 or 4 * n * dim < least:
        return False
    if directory is None:
        return True
    free = room.free_bytes(directory)  # (unknown: in process)
    need = INPUT_ROOM * (4 * n * dim + 8 * n) - (4 * n * dim if staged else 0) + output
    return free is not None and free >= need


def _tmp(directory: Path, gen: int, what: str) -> Path:
    return directory / f"build.{gen}.{what}.tmp"


Built = tuple[PostingFile, BlockTable, ClusterTree, HeadGraph | None, int]


def build_in_child(
    st: SpannState, gen: int, slots: I64, vectors: F32, progress: Progress | None
) -> Built:
    """(Parent) run passes 1-6 of a build into posting file generation `gen` in a child;
    return (file, table, tree, graph, replica cap) loaded from its output."""
    d = st.directory
    names = ("slots", "vectors", "heads", "state", "log")
    paths = {w: _tmp(d, gen, w) for w in names}
    fd = staging.staged_fd(vectors)  # vectors the engine wrote where the child reads them
    try:
        for what, arr in (("slots", slots), ("vectors", vectors)):
            if what == "vectors" and fd is not None:
                continue
            with open(paths[what], "wb") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr))
        job = {
            "dim": st.dim,
            "metric": st.metric,
            "params": st.params.__dict__,
            "directory": str(d),
            "gen": gen,
            "threads": st.threads,
            "vectors_fd": fd,
        }
        length = _run(job, paths["log"], progress, fds=() if fd is None else (fd,))
        _, table, tree, info, qbytes, _ = load_state(paths["state"], st.dim, st.width, st.bdim)
        quant = load_codec(qbytes, st.dim, st.params.vector_dtype)
        file = PostingFile(
            file_path(d, "postings", gen), st.dim, length, st.width, quant, st.block_cap
        )
        graph = None
        if info["heads"]:
            efc, form = st.params.head_ef_construction, st.params.head_dtype
            graph = load_heads(paths["heads"], head_space(st.metric), st.dim, efc, form)
        return file, file.attach(table), tree, graph, int(info["replica_cap"])
    finally:
        for p in paths.values():
            p.unlink(missing_ok=True)


def _run(
    job: dict[str, Any],
    log: Path,
    progress: Progress | None,
    module: str = __name__,
    fds: tuple[int, ...] = (),
) -> int:
    """Start the child (`module`'s `run_child`) with the descriptors `fds` inherited,
    forward its progress, wait for it; the length its `done` line reports. Its stderr goes
    to `log`, read back through the parent's own descriptor (the child's checkpoints may
    delete the name meanwhile)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])  # the directory holding `vecdb`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    code = f"from {module} import run_child; run_child()"
    # -P: `python -c` would put the working directory ahead of PYTHONPATH, so a `vecdb`
    # there (a checkout the server was started in) would run the build instead of this
    # process's own (a benchmark of an old worktree ran the new code's build that way)
    argv = [sys.executable, "-P", "-c", code, json.dumps(job)]
    with open(log, "w+b") as err:
        proc = Popen(argv, stdin=PIPE, stdout=PIPE, stderr=err, env=env, pass_fds=fds)
        assert proc.stdout is not None and proc.stdin is not None
        result: dict[str, Any] | None = None
        try:
            for line in proc.stdout:
                msg = json.loads(line)
                if msg["kind"] == "progress":
                    if progress is not None:
                        progress(msg["phase"], msg["done"], msg["total"])
                else:
                    result = msg
            proc.wait()
        finally:
            if proc.poll() is None:  # the caller gave up (closing, superseded): stop the child
                proc.kill()
                proc.wait()
            proc.stdin.close()
            proc.stdout.close()
        if result is not None and result["kind"] == "done" and proc.returncode == 0:
            return int(result["length"])
        if result is not None and result["kind"] == "error":
            raise _error(result["type"], result["message"], result.get("need"))
        err.seek(max(0, err.seek(0, os.SEEK_END) - LOG_TAIL))
        tail = err.read().decode(errors="replace")
    raise Internal(f"index child process exited with status {proc.returncode}: {tail}")


def _error(name: str, message: str, need: int | None = None) -> Exception:
    """The vecdb error the child raised (a `DiskFull` with the bytes it needed), or Internal
    with its type and message."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.DiskFull):
        return cls(message, need=need)
    if isinstance(cls, type) and issubclass(cls, errors.VecdbError):
        return cls(message)
    return Internal(f"index child process failed: {name}: {message}")


# --- the child -------------------------------------------------------------------------------


def _watch_parent() -> None:
    """Exit as soon as the parent's end of stdin closes (the parent died or gave up); raw
    reads of fd 0 (a buffered reader's lock would block the interpreter's shutdown)."""
    while os.read(0, 4096):
        pass
    os._exit(3)


def _say(out: Callable[[str], Any], **msg: Any) -> None:
    out(json.dumps(msg) + "\n")
    sys.stdout.flush()


def child_main(job: dict[str, Any]) -> None:
    """(Child) passes 1-6 over the memory-mapped input; the results into the files."""
    from vecdb.index.spann.build import _passes, fit_codec  # build imports this lazily

    tune_allocator()  # the allocator settings a database's own process takes
    threading.Thread(target=_watch_parent, daemon=True).start()
    kill_point("build_child")  # crash tests: a child that dies without a word
    d, gen, dim = Path(job["directory"]), int(job["gen"]), int(job["dim"])
    p = BuildParams.parse(job["params"])
    # file pages, not anonymous memory; plain writable arrays as the kernels were compiled
    # for (the build never writes its input)
    slots = np.asarray(np.load(_tmp(d, gen, "slots"), mmap_mode="r+"))
    fd = job.get("vectors_fd")
    if fd is None:
        vectors = np.asarray(np.load(_tmp(d, gen, "vectors"), mmap_mode="r+"))
    else:  # the parent's staged input (`staging`), through the descriptor it passed
        vectors = staging.open_staged(int(fd), len(slots), dim)
    quant = fit_codec(p, job["metric"], vectors)
    path = file_path(d, "postings", gen)
    file = PostingFile(path, dim, width=p.width, quant=quant, full_cap=p.block_entries(dim))
    st = new_state(dim, job["metric"], p, d, file=file)  # attaches its table to the new file
    st.threads = int(job["threads"])
    table = st.table

    def report(phase: str, done: int, total: int) -> None:
        _say(sys.stdout.write, kind="progress", phase=phase, done=done, total=total)

    tree, graph, cap = _passes(st, file, table, slots, vectors, report)
    file.sync()
    info = {"replica_cap": cap, "heads": graph is not None}
    if graph is not None:
        save_heads(_tmp(d, gen, "heads"), graph)
    qbytes = b"" if quant is None else quant.to_bytes()
    save_state(_tmp(d, gen, "state"), info, b"", table.to_arrays(), tree.to_sections(), qbytes)
    _say(sys.stdout.write, kind="done", length=file.length)
    file.close()


def run_child() -> None:
    """The child's entry point (`python -c`, see `_run`): the job from argv[1]."""
    try:
        child_main(json.loads(sys.argv[1]))
    except BaseException as e:  # reported to the parent, which raises it there
        traceback.print_exc()
        need = getattr(e, "need", None)
        _say(sys.stdout.write, kind="error", type=type(e).__name__, message=str(e), need=need)
        sys.exit(1)
