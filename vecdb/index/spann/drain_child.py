"""A large drain into a built SPANN index, and the maintenance it causes, run in a child
process, so the long-running process never holds what that work leaves behind.

A child bulk build (`spann.child`) leaves a long-running process at what a fresh open needs,
but a load that goes on while the build runs ends with its last vectors inserted into the
built index, and the splits and reassignment they cause, in the parent. That tail left
(70,000 x 1024: 65,536 built in the child, 4,464 inserted) 27.0 MiB after the build against
19.5 MiB for a fresh open (1.39): not index data but process-wide lazy state the insert path
loads (two numba kernel signatures of the replica selection the build never used in the
parent: its LLVM code and type caches in glibc's heap and six pinned pymalloc arenas,
measured with /proc/self/smaps, mallinfo2 and sys._debugmallocstats). So a drain of at least
`VECDB_DRAIN_CHILD_MIB` MiB of float32 vectors runs in a child that opens the index as a
fresh open does, inserts, maintains until no work is left, and checkpoints; the parent then
opens that checkpoint as a fresh open does and swaps it in.

Protocol: the parent checkpoints first (the child starts from exactly the parent's state, and
the posting file bytes the child may write are referenced by neither), then writes the
drain's slots and vectors to `build.<ckpt>.dslots.tmp` / `build.<ckpt>.dvectors.tmp` (raw
arrays; `persist.clean_directory` removes them after a crash) and starts the child like a
child build (`child._run`: JSON progress lines on stdout, `done` or `error`, the child dies
with its parent). The child publishes checkpoints at the drain's sequence number (the op log
still holds every write after it, and the drain's own writes until the parent truncates it,
so a crash anywhere replays into a whole index: a replayed insert is re-placed). Searches run
on the parent's index plus the frozen buffer throughout; the parent writes no posting bytes
meanwhile (the worker is in this job; a remove only marks a version). On `done` the parent
opens the child's last checkpoint and publishes it by one swap of references under the write
lock; slots removed in the parent while the child ran stay removed (remove wins). If the
child fails or is abandoned the drain fails as an in-process one would (the buffer is thawed);
if the child had published a checkpoint, the parent publishes its own state again first, so
that nothing it writes next lands in bytes the published checkpoint names.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.allocator import tune_allocator
from vecdb.index.base import Progress
from vecdb.index.spann import child
from vecdb.index.spann.killpoints import kill_point
from vecdb.index.spann.persist import checkpoint, open_state, read_manifest
from vecdb.index.spann.state import OWN_FIELDS, SpannState

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
ENV = "VECDB_DRAIN_CHILD_MIB"
DEFAULT_MIB = 8.0  # drains of at least this many MiB of float32 vectors run in a child
MAINTAIN_ROUNDS = 64  # checkpoint-and-retry rounds of the child's maintenance at most
NAMES = ("dslots", "dvectors", "dlog")
log = logging.getLogger("vecdb.index")


def child_min_bytes() -> int | None:
    """The smallest drain (float32 bytes of its vectors) run in a child; None: never."""
    return child.env_min_bytes(ENV, DEFAULT_MIB)


def use_child(st: SpannState, n: int) -> bool:
    """Whether a drain of n vectors into `st` runs in a child: the index is built and has no
    rerank store (its rows are written by the parent), the drain is large enough, and the
    disk has room for the child's input `child.INPUT_ROOM` times over."""
    least = child_min_bytes()
    if least is None or n == 0 or st.graph is None or st.store is not None:
        return False
    if 4 * n * st.dim < least:
        return False
    try:
        free = shutil.disk_usage(st.directory).free
    except OSError:
        return False
    return free >= child.INPUT_ROOM * (4 * n * st.dim + 8 * n)


def add_in_child(
    st: SpannState,
    chunks: Any,
    seq: int,
    applied_seq: int,
    progress: Progress | None,
) -> None:
    """(Parent) insert the (slots, vectors) `chunks` and run the maintenance they cause in a
    child; publish its result. `seq`: the sequence the drain makes applied (the child's
    checkpoints record it); `applied_seq`: the engine's applied sequence now (the checkpoint
    taken first records it)."""
    checkpoint(st, applied_seq)  # the child opens exactly this state
    d, tag = st.directory, st.ckpt_no
    paths = {w: child._tmp(d, tag, w) for w in NAMES}
    try:
        n = 0
        with open(paths["dslots"], "wb") as fs, open(paths["dvectors"], "wb") as fv:
            for slots, vectors in chunks:
                np.ascontiguousarray(slots, np.int64).tofile(fs)
                np.ascontiguousarray(vectors, np.float32).tofile(fv)
                n += len(slots)
        job = {
            "dim": st.dim,
            "metric": st.metric,
            "params": st.params.__dict__,
            "directory": str(d),
            "tag": tag,
            "n": n,
            "seq": int(seq),
            "threads": st.threads,
        }
        try:
            child._run(job, paths["dlog"], progress, module=__name__)
            kill_point("drain_child")  # crash tests: the child's checkpoint is published
            new, _ = open_state(st.dim, st.metric, st.params.__dict__, d, clean=False)
        except BaseException:
            _republish(st, applied_seq)
            raise
        adopt(st, new)
    finally:
        for p in paths.values():
            p.unlink(missing_ok=True)


def _republish(st: SpannState, applied_seq: int) -> None:
    """After a child that failed or was abandoned: if it published a checkpoint, publish
    this process's state again, before anything here writes posting bytes that the child's
    checkpoint names (and with a head graph file of its own: the child's checkpoint deleted
    ours). Best effort: the original error is what the caller sees."""
    try:
        m = read_manifest(st.directory)
        if m is not None and list(m["gens"]) != [st.file_gen, st.heads_gen, st.ckpt_no]:
            st.heads_dirty = True
            checkpoint(st, applied_seq)
    except Exception:  # noqa: BLE001 - the child's error is the one to report
        log.exception("re-publishing the index after a failed drain child")


def adopt(st: SpannState, new: SpannState) -> None:
    """Publish `new` (opened from the child's checkpoint of the same directory, as a fresh
    open does) into `st`: every field of the index's content is taken from `new`, the ones
    that belong to this process's object (`OWN_FIELDS`) are kept; slots removed in `st`
    meanwhile stay removed (`SpannState.publish`)."""
    content = {
        f.name: getattr(new, f.name)
        for f in fields(SpannState)
        if f.name not in OWN_FIELDS and f.name not in ("slot_version", "n_live")
    }
    st.publish("drain publish", new.slot_version, content)


# --- the child -------------------------------------------------------------------------------


def child_main(job: dict[str, Any]) -> None:
    """(Child) open the index, insert the input, maintain until done, checkpoint."""
    from vecdb.index.spann.maintain import maintain
    from vecdb.index.spann.update import add

    tune_allocator()  # the allocator settings a database's own process takes
    threading.Thread(target=child._watch_parent, daemon=True).start()
    kill_point("drain_child_start")  # crash tests: a child that dies without a word
    d, tag, dim, n = Path(job["directory"]), int(job["tag"]), int(job["dim"]), int(job["n"])
    slots = np.fromfile(child._tmp(d, tag, "dslots"), np.int64, count=n)
    # file pages, not anonymous memory; a plain writable array, as the kernels were compiled
    # for (nothing writes the input)
    mapped = np.memmap(child._tmp(d, tag, "dvectors"), np.float32, "r+", shape=(n, dim))
    vectors: F32 = np.asarray(mapped)
    st, _ = open_state(dim, job["metric"], job["params"], d, clean=False)
    st.threads = int(job["threads"])
    seq = int(job["seq"])

    def report(phase: str, done: int, total: int) -> None:
        child._say(sys.stdout.write, kind="progress", phase=phase, done=done, total=total)

    add(st, slots, vectors, report)
    del slots, vectors, mapped
    checkpoint(st, seq)  # as the engine's drain does before maintenance
    kill_point("drain_child_published")  # crash tests: a child that dies after publishing
    for rounds in range(MAINTAIN_ROUNDS):  # as the engine's maintenance jobs would
        report("maintain", rounds, MAINTAIN_ROUNDS)
        more = maintain(st, None)
        checkpoint(st, seq)  # frees what the rewrites dropped; may unstick waiting work
        if not (more or st.unstuck()):
            break
    report("maintain", MAINTAIN_ROUNDS, MAINTAIN_ROUNDS)
    st.file.close()
    child._say(sys.stdout.write, kind="done", length=0)


def run_child() -> None:
    """The child's entry point (`python -m vecdb.index.spann.drain_child <json>`)."""
    try:
        child_main(json.loads(sys.argv[1]))
    except BaseException as e:  # reported to the parent, which raises it there
        traceback.print_exc()
        child._say(sys.stdout.write, kind="error", type=type(e).__name__, message=str(e))
        sys.exit(1)


if __name__ == "__main__":
    run_child()
