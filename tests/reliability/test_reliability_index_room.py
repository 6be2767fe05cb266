"""An index job without room on the disk is not started: a SPANN bulk build or a codebook
training first bounds what it will write (`vecdb.index.room`) and is refused with `DiskFull`
before writing anything when the disk has less free than that plus the headroom; the points
stay searchable exactly, writes go on, the refused build's retries wait without redoing its
clustering, a build that fails part-way leaves no partial file, and once the disk has room
the job runs. Simulated here by the index layer's free-space probe (every CI run), and for
real on a loop-mounted ext4 image (root only; skipped with the reason otherwise).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from loopdisk import loop_disk

from vecdb.engine import Database
from vecdb.errors import DiskFull
from vecdb.index import heads, room
from vecdb.index.spann import build
from vecdb.index.spann.index import SpannIndex

DIM, N = 16, 6_000
BIG = 1 << 50  # "free bytes" of a roomy disk


def points(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def postings_files(root: Path) -> list[Path]:
    """Posting files of a build (generation 0 is the empty index's)."""
    return sorted(p for p in root.rglob("postings.*.bin") if p.name != "postings.0.bin")


@pytest.fixture
def free(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The index layer's free-space probe answers `free["bytes"]`."""
    answer = {"bytes": BIG}
    monkeypatch.setattr(room, "free_bytes", lambda directory: answer["bytes"])
    return answer


def exact_top1(x: np.ndarray, q: np.ndarray) -> int:
    return int(np.argmin(((x - q) ** 2).sum(1)))


def test_a_build_without_room_is_refused_before_it_writes(
    tmp_path: Path, free: dict[str, int]
) -> None:
    x = points(N, 0)
    with Database(tmp_path / "db") as db:
        db.create_collection("c", DIM, "l2")
        db.upsert("c", list(range(N)), x)
        free["bytes"] = room.HEADROOM  # nothing left beyond the headroom
        with pytest.raises(DiskFull) as err:
            db.optimize("c")
        msg = err.value.message
        assert "index build of 6,000 vectors" in msg and "not started" in msg, msg
        assert "max_disk_ratio" in msg  # what else would make it fit
        assert postings_files(tmp_path) == []  # nothing written
        status = db.stats("c")["index_status"]
        assert status["state"] == "error" and "not started" in status["error"]
        # searches are exact from the buffer, writes go on
        got = db.search("c", x[17], k=1)
        assert int(got.ids[0, 0]) == exact_top1(x, x[17]) == 17
        db.upsert("c", [N], points(1, 1))
        free["bytes"] = BIG  # space is freed: the build runs
        db.optimize("c")
        assert db.get_collection("c").indexed == N + 1
        assert len(postings_files(tmp_path)) == 1


def test_a_build_refused_after_measuring_waits_without_clustering_again(
    tmp_path: Path, free: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Room for the floor of any build but not for what pass 4 counts: refused before pass
    5 writes; its retries are refused up front (no second clustering) while the disk has
    less than that; it runs once there is room."""
    measured: list[int] = []
    real_need, real_tree = build.build_need, heads.build_tree
    trees = [0]

    def need(*args: object) -> int:
        measured.append(real_need(*args))  # type: ignore[arg-type]
        free["bytes"] = 0  # the disk fills while the build clusters
        return measured[-1]

    def tree(*args: object, **kw: object) -> object:
        trees[0] += 1
        return real_tree(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(build, "build_need", need)
    monkeypatch.setattr("vecdb.index.spann.build.build_tree", tree)
    x = points(N, 2)
    with Database(tmp_path / "db") as db:
        db.create_collection("c", DIM, "l2")
        db.upsert("c", list(range(N)), x)
        with pytest.raises(DiskFull) as err:
            db.optimize("c")
        assert trees[0] == 1 and len(measured) == 1
        assert f"needs about {measured[0] / 2**20:.1f} MiB" in err.value.message
        assert postings_files(tmp_path) == []  # the new file is gone
        # more free than any build's floor, less than what the refused one measured
        index = db.collections["c"].core.index
        assert isinstance(index, SpannIndex)
        assert build.build_floor(index.state, N) < measured[0]
        free["bytes"] = room.HEADROOM + measured[0] - 4096
        with pytest.raises(DiskFull) as again:
            db.optimize("c")
        assert trees[0] == 1  # refused before clustering
        assert f"needs about {measured[0] / 2**20:.1f} MiB" in again.value.message
        monkeypatch.setattr(build, "build_need", real_need)
        free["bytes"] = BIG
        db.optimize("c")
        assert trees[0] == 2 and db.get_collection("c").indexed == N
        assert db.search("c", x[5], k=1).ids[0, 0] == 5


def test_a_build_failing_part_way_removes_its_posting_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build whose writes fail after its posting file was written (the disk filled under
    it): the file is deleted at once, not at the next checkpoint."""
    real = build.write_postings
    failed = [0]

    def write_then_fail(*args: object, **kw: object) -> None:
        real(*args, **kw)  # type: ignore[arg-type]
        if failed[0] == 0:
            failed[0] += 1
            assert postings_files(tmp_path)  # written
            raise DiskFull("simulated: no space left on the disk")

    monkeypatch.setattr(build, "write_postings", write_then_fail)
    x = points(N, 3)
    with Database(tmp_path / "db") as db:
        db.create_collection("c", DIM, "l2")
        db.upsert("c", list(range(N)), x)
        with pytest.raises(DiskFull):
            db.optimize("c")
        assert postings_files(tmp_path) == []
        db.optimize("c")  # the retry builds
        assert db.get_collection("c").indexed == N and len(postings_files(tmp_path)) == 1


def test_a_drain_into_a_built_index_without_room_keeps_the_buffer(
    tmp_path: Path, free: dict[str, int]
) -> None:
    """After the build, a drain of new writes with no room for its add is refused before
    any of it is applied: the writes stay buffered and are searched exactly; with room
    again they are indexed."""
    x = points(N, 6)
    with Database(tmp_path / "db") as db:
        db.create_collection("c", DIM, "l2")
        db.upsert("c", list(range(N)), x)
        db.optimize("c")
        y = points(300, 7)  # (a share of the index too small for a rebuild)
        db.upsert("c", list(range(N, N + len(y))), y)
        free["bytes"] = room.HEADROOM
        with pytest.raises(DiskFull) as err:
            db.optimize("c")
        assert "indexing 300 buffered vectors" in err.value.message
        info = db.get_collection("c")
        assert info.indexed == N and info.buffered == len(y)
        assert int(db.search("c", y[9], k=1).ids[0, 0]) == N + 9  # from the buffer
        free["bytes"] = BIG
        db.optimize("c")
        info = db.get_collection("c")
        assert info.indexed == N + len(y) and info.buffered == 0


def maxsim(q: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    return np.array([(q @ d.T).max(1).sum() for d in docs])


def test_a_codebook_training_without_room_is_refused_and_search_stays_exact(
    tmp_path: Path, free: dict[str, int]
) -> None:
    rng = np.random.default_rng(4)
    docs = [rng.standard_normal((int(n), DIM)).astype(np.float32) for n in rng.integers(8, 40, 300)]
    with Database(tmp_path / "db") as db:
        db.create_collection("d", DIM, "ip", kind="multivector")
        db.upsert_documents("d", list(range(len(docs))), docs)
        free["bytes"] = room.HEADROOM
        with pytest.raises(DiskFull) as err:
            db.optimize("d")
        assert db.stats("d")["index"]["trained"] is False
        assert "codebook training of" in err.value.message and "not started" in err.value.message
        q = rng.standard_normal((5, DIM)).astype(np.float32)
        got = db.search_documents("d", q, k=5)
        want = np.argsort(-maxsim(q, docs), kind="stable")[:5]
        assert [int(i) for i in got.ids[0]] == [int(i) for i in want]  # exact MaxSim
        db.upsert_documents("d", [len(docs)], [docs[0]])  # writes go on
        free["bytes"] = BIG
        db.optimize("d")
        assert db.stats("d")["index_status"]["error"] == ""
        assert db.stats("d")["index"]["trained"] is True


# -- a real disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 192 MiB ext4 image on a loop device (root only)."""
    with loop_disk(tmp_path / "disk.img", tmp_path / "mnt", 192) as mnt:
        yield mnt


def free_mib(path: Path) -> float:
    return shutil.disk_usage(path).free / 2**20


def test_a_real_disk_too_small_for_the_build(small_disk: Path) -> None:
    """On a real file system: the build is refused and the disk keeps its free space
    (before: the build's partial file filled it and writes were refused until a retry
    removed it); writes go on; with the space back the build runs and leaves the headroom."""
    x = np.random.default_rng(5).standard_normal((60_000, 96)).astype(np.float32)
    with Database(small_disk / "db") as db:
        db.create_collection("c", 96, "l2")
        for lo in range(0, len(x), 10_000):
            db.upsert("c", list(range(lo, lo + 10_000)), x[lo : lo + 10_000])
        filler = small_disk / "filler"
        keep = 40
        with open(filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, (int(free_mib(small_disk)) - keep) << 20)
        before = free_mib(small_disk)
        with pytest.raises(DiskFull) as err:
            db.optimize("c")
        assert "not started" in err.value.message
        assert free_mib(small_disk) > before - 4  # nothing of the build stayed on the disk
        db.upsert("c", [10**6], x[:1])  # writes are accepted
        filler.unlink()
        db.optimize("c")
        assert db.get_collection("c").indexed == len(x) + 1
        assert free_mib(small_disk) >= room.HEADROOM / 2**20 - 8


def test_a_child_builds_refusal_keeps_the_bytes_it_measured() -> None:
    """A build in a child process reports its refusal to the parent as `DiskFull` with the
    bytes it needed (what the parent's retries then wait for)."""
    from vecdb.index.spann import child

    err = child._error("DiskFull", "the index build of 9 vectors needs about 1.0 MiB", 123)
    assert isinstance(err, DiskFull) and err.need == 123 and "9 vectors" in err.message
    assert child._error("InvalidArgument", "x", None).__class__.__name__ == "InvalidArgument"


def test_a_document_upsert_needs_room_for_its_rows_before_it_is_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document upsert's tokens go to RocksDB in the commit and to the index's row file
    after it: an acknowledged write must not fail on the second, so the commit is refused
    (`DiskFull`, nothing written) unless the disk has room for both above the reserve."""
    from vecdb.storage import faults

    rng = np.random.default_rng(8)
    docs = [rng.standard_normal((1024, 128)).astype(np.float32) for _ in range(8)]  # 4 MiB
    with Database(tmp_path / "db") as db:
        db.create_collection("d", 128, "ip", kind="multivector")
        monkeypatch.setattr(faults, "free_bytes", lambda path: db.kv.reserve_bytes + (6 << 20))
        with pytest.raises(DiskFull) as err:  # 4 MiB in the batch + 4 MiB of rows > 6 MiB
            db.upsert_documents("d", list(range(8)), docs)
        assert "MiB for this write" in err.value.message and "reserve" in err.value.message
        assert db.count("d") == 0 and db.get_documents("d", list(range(8))) == []
        db.upsert_documents("d", [0], [docs[0][:16]])  # a small one fits
        assert db.count("d") == 1
        monkeypatch.setattr(faults, "free_bytes", lambda path: 1 << 50)
        db.upsert_documents("d", list(range(8)), docs)
        assert db.count("d") == 8
        got = db.search_documents("d", docs[3][:4], k=1)
        assert int(got.ids[0, 0]) == 3
