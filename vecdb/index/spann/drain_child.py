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
the posting file bytes the child may write are referenced by neither: the blocks of that
checkpoint's table stay out of the child's free space whatever it drops and checkpoints,
`SpaceMap.hold`, since the parent's searches read them until the swap), then writes the
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

A rerank store (`vectors`, `rerank` != "none"): the child writes the drain's rows, through its
own store object of the same `vectors.bin`, in `update.add` as a drain in process does (before
the child publishes the slots in its state; its checkpoint fsyncs them before its manifest
names the slots). Not the parent before starting the child: that is the drain's largest write
done in the long-running process, and the child's add would write the rows again or need a
path of its own that skips them. So the parent's store object (the process's own, kept by
`adopt`) takes them in (`VectorStore.refresh`) before the swap makes the slots visible here:
the file's size again (the child grew it) and a map over it (warm reads skip a row past the
map: a search would miss the drained slots), and the drained rows' pages no longer known as
holes (a page punched before the drain holds rows now; a slot removed while the child ran
must have its page punched at the next checkpoint). Cold reads (O_DIRECT by offset, on their
own descriptor) need nothing. A failed child's rows are taken in the same way (its slots are
not live here; the next drain writes them again). After a crash: a published checkpoint of
the child names only rows it fsynced; rows the child wrote without one belong to slots the
reopened index does not hold, which the op-log replay puts into the buffer and the next drain
writes again (the same bytes: a slot's vector never changes).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from vecdb.allocator import tune_allocator
from vecdb.index import room
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
    """Whether a drain of n vectors into `st` runs in a child: the index is built, the drain
    is large enough, and the disk has room for the child's input `child.INPUT_ROOM` times
    over (a rerank store's rows are written by the child: see the module docstring)."""
    least = child_min_bytes()
    if least is None or n == 0 or st.graph is None:
        return False
    if 4 * n * st.dim < least:
        return False
    free = room.free_bytes(st.directory)  # (unknown: in process)
    return free is not None and free >= child.INPUT_ROOM * (4 * n * st.dim + 8 * n)


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
        # the slots are read back through this descriptor (`_drained`): the child's
        # checkpoints delete the exchange files' names
        with open(paths["dslots"], "w+b") as fs:
            with open(paths["dvectors"], "wb") as fv:
                for slots, vectors in chunks:
                    np.ascontiguousarray(slots, np.int64).tofile(fs)
                    np.ascontiguousarray(vectors, np.float32).tofile(fv)
                    n += len(slots)
            fs.flush()
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
                _republish(st, applied_seq, fs, n)
                raise
            adopt(st, new, _drained(st, fs, n))
    finally:
        for p in paths.values():
            p.unlink(missing_ok=True)


def _drained(st: SpannState, fs: BinaryIO, n: int) -> I64:
    """The drain's n slots, read back from the start of their exchange file `fs`, when the
    index has a rerank store whose rows the child wrote; else none (nothing to refresh)."""
    if st.store is None:
        return np.zeros(0, np.int64)
    fs.seek(0)
    return np.fromfile(fs, np.int64, count=n)


def _republish(st: SpannState, applied_seq: int, fs: BinaryIO, n: int) -> None:
    """After a child that failed or was abandoned: take in the rerank rows it may have
    written (their pages are not holes any more), and if it published a checkpoint, publish
    this process's state again, before anything here writes posting bytes that the child's
    checkpoint names (and with a head graph file of its own: the child's checkpoint deleted
    ours). Best effort: the original error is what the caller sees."""
    try:
        store = st.store
        if store is not None and store.mapped:  # any row the child may have given out
            store.refresh(np.arange(store.next_row, store.file_rows()))
        elif store is not None:  # the drained slots' rows
            store.refresh(_drained(st, fs, n))
        m = read_manifest(st.directory)
        if m is not None and list(m["gens"]) != [st.file_gen, st.heads_gen, st.ckpt_no]:
            st.heads_dirty = True
            checkpoint(st, applied_seq)
    except Exception:  # noqa: BLE001 - the child's error is the one to report
        log.exception("re-publishing the index after a failed drain child")


def adopt(st: SpannState, new: SpannState, drained: I64) -> None:
    """Publish `new` (opened from the child's checkpoint of the same directory, as a fresh
    open does) into `st`: every field of the index's content is taken from `new`, the ones
    that belong to this process's object (`OWN_FIELDS`) are kept; slots removed in `st`
    meanwhile stay removed (`SpannState.publish`). `st`'s rerank store takes in the rows the
    child wrote for the `drained` slots (in row order "head" with the child's map) before
    they become visible here (`new`'s own store object of the same file is closed)."""
    if st.store is not None:
        assert new.store is not None
        if st.store.mapped:  # the child's rows for the drained slots, and its map
            st.store.adopt_map(new.store)
        st.store.refresh(st.store.rows_of(drained))
    if new.store is not None:
        new.store.close()
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
    # the parent's searches read this checkpoint's blocks until it adopts ours: never reuse
    # them, whatever this process's checkpoints free (`SpaceMap.hold`)
    st.file.space.hold(st.table.extents().offset)
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
    if st.store is not None:
        st.store.close()
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
