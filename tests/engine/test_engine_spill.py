"""The write buffer of a never-built SPANN collection spills to files past `first_build_bytes`.

A load larger than the buffer's memory cap is held on the index's disk (unnamed files, page
cache) instead of being built from its first half and rebuilt from everything: the first
build starts when the writes pause, at optimize(), or at `spill_build_bytes`. Real RocksDB,
real SPANN builds, real files in tmp_path; the caps are set small so the sizes stay small.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
from spill_files import unnamed_files

import vecdb
from vecdb.engine.buffer import WriteBuffer
from vecdb.engine.settings import EngineSettings
from vecdb.errors import DiskFull, ResourceExhausted
from vecdb.index import room
from vecdb.index.flat import FlatIndex
from vecdb.index.spann.index import SpannIndex
from vecdb.index.spann.staging import SpillFile, staged_fd, staged_rows

MIB = 1 << 20
DIM = 64
ROW = 4 * DIM
# a 1 MiB memory cap (spill from 512 KiB), the first build at 8 MiB while writes stream in,
# no quiet-time build and no refusal-free waiting: a write that does not fit fails at once
ENGINE = {"buffer_max_bytes": MIB, "rebuild_max_bytes": 8 * MIB, "idle_seconds": 86_400,
          "build_min_vectors": 10**9, "stall_timeout": 0}  # fmt: skip


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _load(c: vecdb.Client, x: np.ndarray, batch: int = 1000, start: int = 0) -> None:
    for lo in range(0, len(x), batch):
        ids = list(range(start + lo, start + min(lo + batch, len(x))))
        c.upsert("x", ids, x[lo : lo + batch])


def test_settings_spill_only_with_the_auto_first_build() -> None:
    """The spill trigger is `rebuild_max_bytes` when the first build size is automatic and
    smaller; an explicit `bulk_build_bytes`, or no rebuild beyond the first build, spills
    nothing (0). A spilling buffer holds at most 64 MiB in memory."""
    assert EngineSettings.parse({}).spill_build_bytes == 2048 * MIB
    assert EngineSettings.parse({}).spill_from_bytes == 64 * MIB  # of the 512 MiB first build
    assert EngineSettings.parse(ENGINE).spill_from_bytes == MIB // 2
    assert EngineSettings.parse(ENGINE).spill_build_bytes == 8 * MIB
    assert EngineSettings.parse({**ENGINE, "bulk_build_bytes": 4 * MIB}).spill_build_bytes == 0
    assert EngineSettings.parse({**ENGINE, "rebuild_max_bytes": MIB // 2}).spill_build_bytes == 0


def test_flat_segment_spills_past_its_threshold(tmp_path: Path) -> None:
    """Rows past `spill_from` bytes go to file chunks (counted by `spilled_bytes`); search,
    iteration and consolidation see every row exactly as in memory; a segment with a file
    chunk is not compacted back into memory while its live rows exceed `spill_from`."""
    seg = FlatIndex(DIM, "l2", SpillFile(tmp_path, DIM), spill_from=MIB)
    x = _rows(12_000)
    for lo in range(0, len(x), 1000):
        seg.add(np.arange(lo, lo + 1000), x[lo : lo + 1000])
    assert seg.spills
    on_file = seg.spilled_bytes
    # the chunks open at 4,096 rows (1 MiB) and more are held in memory; the rest is on file
    assert 0 < on_file <= len(x) * ROW - MIB
    assert on_file % ROW == 0
    q = _rows(5, seed=1)
    res = seg.search(q, 3)
    d = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(res.slots, np.argsort(d, axis=1)[:, :3])
    seg.remove(np.arange(0, 7_000))  # most rows dead, but 5,000 live (1.25 MiB) remain
    seg.add(np.arange(20_000, 20_010), x[:10])
    assert seg.spilled_bytes >= on_file  # the file chunks are still in place
    slots, matrix = seg.consolidate()
    np.testing.assert_array_equal(slots[:5000], np.arange(7_000, 12_000))
    np.testing.assert_array_equal(matrix[:5000], x[7_000:])
    np.testing.assert_array_equal(matrix[5000:], x[:10])


def test_a_spilled_segment_whose_live_rows_fit_in_memory_is_compacted(tmp_path: Path) -> None:
    """Once the live rows of a segment with file chunks fit under `spill_from`, a write that
    finds most rows dead compacts them into memory (a hot set overwritten again and again
    does not grow the spill file without bound); later rows past `spill_from` spill to a
    new file; every search stays exact."""
    seg = FlatIndex(DIM, "l2", SpillFile(tmp_path, DIM), spill_from=MIB)
    x = _rows(16_000)
    for lo in range(0, 12_000, 1000):
        seg.add(np.arange(lo, lo + 1000), x[lo : lo + 1000])
    assert seg.spilled_bytes > 0
    seg.remove(np.arange(0, 11_000))  # 1,000 live rows: 256 KiB
    seg.add(np.arange(20_000, 20_010), x[12_000:12_010])
    assert seg.spilled_bytes == 0 and len(seg) == 1_010
    live = np.concatenate([np.arange(11_000, 12_000), np.arange(20_000, 20_010)])
    rows = np.concatenate([x[11_000:12_000], x[12_000:12_010]])
    q = _rows(5, seed=1)
    d = ((q[:, None, :] - rows[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(seg.search(q, 3).slots, live[np.argsort(d, axis=1)[:, :3]])
    more = x[12_010:16_000]  # 3,990 rows more: past 1 MiB again, on a new file
    seg.add(np.arange(30_000, 30_000 + len(more)), more)
    assert 0 < seg.spilled_bytes < len(more) * ROW
    slots, matrix = seg.consolidate()
    np.testing.assert_array_equal(slots, np.concatenate([live, np.arange(30_000, 33_990)]))
    np.testing.assert_array_equal(matrix, np.concatenate([rows, more]))


def test_a_spilled_segment_is_handed_to_its_build_as_its_file(tmp_path: Path) -> None:
    """All rows live, a spilled segment consolidates into its spill file mapped whole (the
    build's staged input, on the same descriptor): the rows kept in memory are written into
    the file's hole, those on file are not copied."""
    spill = SpillFile(tmp_path, DIM)
    seg = FlatIndex(DIM, "l2", spill, spill_from=MIB)
    x = _rows(12_003)  # the last file chunk part filled
    for lo in range(0, len(x), 1000):
        seg.add(np.arange(lo, min(lo + 1000, len(x))), x[lo : lo + 1000])
    on_file = seg.spilled_bytes
    assert 0 < on_file < len(x) * ROW
    slots, matrix = seg.consolidate(lambda rows: pytest.fail("the file is the input"))
    np.testing.assert_array_equal(slots, np.arange(len(x)))
    np.testing.assert_array_equal(matrix, x)
    assert staged_fd(matrix) == spill._file.fd  # type: ignore[union-attr]
    assert seg.spilled_bytes == len(x) * ROW  # every row on file now
    res = seg.search(x[[7, 12_002]], 1)
    assert res.slots[:, 0].tolist() == [7, 12_002]
    assert len(unnamed_files(tmp_path)) == 1
    del spill, matrix, res
    seg.close()  # a closed segment holds no file, whoever still holds the segment
    assert unnamed_files(tmp_path) == []


def test_a_spill_without_room_to_gather_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the rows kept in memory cannot be written into the spill file (no room), the
    segment is gathered by a copy, as one with dead rows is."""
    seg = FlatIndex(DIM, "l2", SpillFile(tmp_path, DIM), spill_from=MIB)
    x = _rows(8000)
    for lo in range(0, len(x), 1000):
        seg.add(np.arange(lo, lo + 1000), x[lo : lo + 1000])
    assert seg.spilled_bytes > 0

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    asked: list[int] = []

    def alloc(rows: int) -> np.ndarray:
        asked.append(rows)
        return np.empty((rows, DIM), np.float32)

    slots, matrix = seg.consolidate(alloc)
    assert asked == [len(x)] and staged_fd(matrix) is None
    np.testing.assert_array_equal(matrix, x)
    np.testing.assert_array_equal(slots, np.arange(len(x)))


def test_flat_segment_without_room_stays_in_memory(tmp_path: Path) -> None:
    """A hook that finds no room (None) is asked once: the segment goes on in memory (and
    its rows count as on file once a build gathers them into a staged input)."""
    asked: list[int] = []

    class NoRoom:
        def rows(self, start: int, count: int) -> None:
            asked.append(count)

        def gather(self, n: int, pieces: list[tuple[int, np.ndarray]]) -> None:
            raise AssertionError("nothing spilled: nothing to gather")

    seg = FlatIndex(DIM, "l2", NoRoom(), spill_from=MIB)
    x = _rows(12_000)
    for lo in range(0, len(x), 1000):
        seg.add(np.arange(lo, lo + 1000), x[lo : lo + 1000])
    assert len(asked) == 1 and not seg.spills and seg.spilled_bytes == 0
    # gathered into a staged (file-backed) input, every row counts as on file
    _, matrix = seg.consolidate(lambda rows: staged_rows(tmp_path, rows, DIM))
    np.testing.assert_array_equal(matrix, x)
    assert seg.spilled_bytes == len(x) * ROW


def test_buffer_cap_counts_memory_and_spill_past_its_limit(tmp_path: Path) -> None:
    """`held_bytes` (what writers wait on) counts rows in memory, and rows on file only
    beyond `spill_limit`."""
    buf = WriteBuffer(DIM, "l2", lambda: SpillFile(tmp_path, DIM), MIB, 2 * MIB)
    x = _rows(16_384)  # 4 MiB
    for lo in range(0, 8192, 1024):  # 2 MiB: the first 1 MiB in memory, the rest on file
        buf.add(np.arange(lo, lo + 1024), x[lo : lo + 1024])
    assert buf.spilled_bytes() == MIB
    assert buf.held_bytes() == MIB
    for lo in range(8192, 16_384, 1024):
        buf.add(np.arange(lo, lo + 1024), x[lo : lo + 1024])
    spilled = buf.spilled_bytes()
    assert spilled == 3 * MIB
    assert buf.held_bytes() == (4 * MIB - spilled) + (spilled - 2 * MIB)


def test_a_load_past_the_cap_is_built_once_at_optimize(tmp_path: Path) -> None:
    """6 MiB of writes through a 1 MiB memory cap with no waiting allowed: none is refused,
    the rows past 512 KiB sit on file, nothing is built before optimize, searches are exact
    meanwhile; optimize builds once from everything, and the files are gone."""
    x = _rows(24_576)  # 6 MiB
    with vecdb.connect(tmp_path / "db", engine=ENGINE) as c:
        c.create_collection("x", dim=DIM, metric="l2", index="spann")
        _load(c, x)
        stats = c.stats("x")
        assert stats["indexed"] == 0 and stats["buffered"] == len(x)
        assert stats["buffer"]["spilled_bytes"] >= 5 * MIB
        assert stats["buffer"]["bytes"] <= MIB
        q = x[[5, 20_000]]
        assert c.search("x", q, k=1).ids[:, 0].tolist() == [5, 20_000]
        c.optimize("x")
        stats = c.stats("x")
        assert stats["indexed"] == len(x) and stats["index_status"]["builds"] == 1
        assert stats["buffer"]["spilled_bytes"] == 0
        assert unnamed_files(tmp_path) == []  # the spill file went with its segment
        assert c.search("x", q, k=1).ids[:, 0].tolist() == [5, 20_000]
        # a built collection's buffer stays in memory: past the cap the write is refused
        with pytest.raises(ResourceExhausted):
            _load(c, _rows(8192, seed=3), batch=2048, start=len(x))


def test_a_failed_first_build_of_a_spilled_load_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first build of a spilled load fails after the buffer was handed over as its spill
    file: every row goes back into the buffer (spilling again), searches stay exact, and
    the next optimize builds everything; no file is left open."""
    real, calls = SpannIndex.build, [0]

    def fail_once(self: SpannIndex, slots: np.ndarray, vectors: np.ndarray, *a: object) -> None:
        calls[0] += 1
        if calls[0] == 1:
            assert staged_fd(vectors) is not None  # handed over as the spill file
            raise DiskFull("simulated: no space left on the disk")
        real(self, slots, vectors, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(SpannIndex, "build", fail_once)
    x = _rows(16_384)  # 4 MiB
    with vecdb.connect(tmp_path / "db", engine=ENGINE) as c:
        c.create_collection("x", dim=DIM, metric="l2", index="spann")
        _load(c, x)
        with pytest.raises(DiskFull) as failed:
            c.optimize("x")
        # the error's frames, which pytest's log capture keeps, hold the build's input
        for tb in [failed.tb] + [r.exc_info[2] for r in caplog.records if r.exc_info]:
            traceback.clear_frames(tb)
        stats = c.stats("x")
        assert stats["indexed"] == 0 and stats["buffered"] == len(x) == c.count("x")
        assert stats["buffer"]["spilled_bytes"] >= 3 * MIB
        q = x[[3, 9_000, 16_383]]
        assert c.search("x", q, k=1).ids[:, 0].tolist() == [3, 9_000, 16_383]
        c.optimize("x")
        assert calls[0] == 2 and c.stats("x")["indexed"] == len(x)
        assert c.search("x", q, k=1).ids[:, 0].tolist() == [3, 9_000, 16_383]
        assert unnamed_files(tmp_path) == []


def test_the_first_build_starts_at_the_spill_limit(tmp_path: Path) -> None:
    """Writes streaming in past `spill_build_bytes` (8 MiB here) start the first build
    without a pause or an optimize."""
    engine = {**ENGINE, "stall_timeout": 60, "drain_vectors": 1000}
    x = _rows(40_960)  # 10 MiB
    with vecdb.connect(tmp_path / "db", engine=engine) as c:
        c.create_collection("x", dim=DIM, metric="l2", index="spann")
        _load(c, x)
        deadline = time.monotonic() + 120
        while c.stats("x")["indexed"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.stats("x")["indexed"] >= 8 * MIB // ROW


def test_no_room_on_the_disk_keeps_the_old_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk without BUILD_DISK_X x the buffered bytes free (a 16 MiB spill chunk: 132 MiB)
    gets no spill: the buffer stays
    in memory, a write past the cap is refused (no waiting allowed here), and the first build
    starts at `first_build_bytes` as before."""
    monkeypatch.setattr(room, "free_bytes", lambda directory: 60 * MIB)
    x = _rows(4096)  # 1 MiB
    with vecdb.connect(tmp_path / "db", engine=ENGINE) as c:
        c.create_collection("x", dim=DIM, metric="l2", index="spann")
        with pytest.raises(ResourceExhausted):
            _load(c, np.concatenate([x, x]), batch=1024)
        assert c.stats("x")["buffer"]["spilled_bytes"] == 0
        deadline = time.monotonic() + 60
        while c.stats("x")["indexed"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.stats("x")["indexed"] > 0


SPILL_WRITER = """
import sys
import numpy as np
import vecdb
path, seed, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
engine = {"buffer_max_bytes": 1 << 20, "rebuild_max_bytes": 64 << 20, "idle_seconds": 86400,
          "build_min_vectors": 10**9}
c = vecdb.connect(path, engine=engine)
c.create_collection("x", dim=dim, metric="l2", index="spann")
print("ready", flush=True)
for lo in range(0, 10**9, 500):
    ids = list(range(lo, lo + 500))
    x = np.stack([np.random.default_rng([i, seed]).standard_normal(dim) for i in ids])
    c.upsert("x", ids, x.astype(np.float32))
    print(f"ack {lo + 500} {c.stats('x')['buffer']['spilled_bytes']}", flush=True)
"""


def test_a_spilled_load_survives_kill_9(tmp_path: Path) -> None:
    """A writer killed with SIGKILL while its buffer is spilled loses no acknowledged write:
    the buffer comes back from RocksDB on open, its files went with the process."""
    script = tmp_path / "writer.py"
    script.write_text(SPILL_WRITER)
    path = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), "7", str(DIM)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acked = spilled = 0
    for line in proc.stdout:
        if line.startswith("ack"):
            acked, spilled = map(int, line.split()[1:])
            if acked >= 12_000:  # 3 MiB: past the 512 KiB spill point
                break
    assert spilled > 0  # the kill lands on a spilled buffer
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for line in proc.stdout.read().splitlines():  # acknowledged before the kill landed
        if line.startswith("ack"):
            acked = int(line.split()[1])
    with vecdb.connect(path, engine={**ENGINE, "rebuild_max_bytes": 64 * MIB}) as c:
        assert c.count("x") >= acked
        got = c.get("x", [0, acked - 1], with_vectors=True)
        want = [np.random.default_rng([i, 7]).standard_normal(DIM) for i in (0, acked - 1)]
        np.testing.assert_allclose(np.stack([p.vector for p in got]), np.stack(want), rtol=1e-6)
        c.optimize("x")
        assert c.stats("x")["indexed"] == c.count("x")


def test_a_reopened_spilled_buffer_spills_again(tmp_path: Path) -> None:
    """A never-built collection closed with its buffer spilled (3 MiB against a 1 MiB cap)
    reopens with that buffer spilled again, not read whole into memory: the cap counts what
    it did before the close, a write is accepted at once, searches are exact."""
    x = _rows(12_288)
    with vecdb.connect(tmp_path / "db", engine=ENGINE) as c:
        c.create_collection("x", dim=DIM, metric="l2", index="spann")
        _load(c, x, batch=1024)
        before = c.stats("x")["buffer"]
    with vecdb.connect(tmp_path / "db", engine=ENGINE) as c:
        after = c.stats("x")["buffer"]
        assert after["spilled_bytes"] > 0 and after["bytes"] <= MIB
        assert after["bytes"] == before["bytes"]
        c.upsert("x", [100_000], x[:1])  # refused before: the whole 3 MiB held in memory
        q = _rows(4, seed=3)
        d = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        got = c.search("x", q, k=5)
        assert got.ids[:, 0].tolist() == np.argmin(d, axis=1).tolist()
        np.testing.assert_allclose(got.distances, np.sort(d, axis=1)[:, :5], rtol=1e-4)
        assert c.count("x") == len(x) + 1


def test_overwrites_of_a_hot_set_keep_the_spill_and_the_cap_bounded(tmp_path: Path) -> None:
    """A never-built, spilled collection whose writes overwrite the same ids again and again
    (the dead rows on file reached `spill_build_bytes` + the cap after ~19 rounds, and every
    write was refused from then on): a hot set that fits in memory is compacted there; one
    that does not starts the first build once the rows on file reach `spill_build_bytes`.
    Every write is accepted and every id reads its last vector."""
    rng = np.random.default_rng(5)
    for hot, engine in ((2048, ENGINE), (4096, {**ENGINE, "stall_timeout": 60})):
        path = tmp_path / f"db{hot}"
        with vecdb.connect(path, engine=engine) as c:
            c.create_collection("x", dim=DIM, metric="l2", index="spann")
            _load(c, _rows(12_288), batch=1024)  # spilled
            c.delete("x", list(range(hot, 12_288)))
            for _ in range(40):  # 40 x 512 KiB (2,048) or 1 MiB (4,096) overwritten
                last = rng.standard_normal((hot, DIM)).astype(np.float32)
                _load(c, last, batch=1024)
            st = c.stats("x")
            assert c.count("x") == hot
            if hot == 2048:  # 512 KiB: compacted into memory, never built
                assert st["indexed"] == 0 and st["buffer"]["spilled_bytes"] <= 8 * MIB
            else:  # 1 MiB live, past the 512 KiB in memory: built from the file's growth
                assert st["indexed"] > 0
            got = c.get("x", [0, hot - 1], with_vectors=True)
            np.testing.assert_array_equal(np.stack([p.vector for p in got]), last[[0, -1]])
