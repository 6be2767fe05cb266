"""A data directory on a read-only file system (a backup or a volume snapshot mounted
read-only): `vecdb inspect` and `--verify` describe and check it (they failed with "opening
.../kv: OSError (errno None)" and called the store DAMAGED: RocksDB and rocksdict write into
the store's directory even on a read-only open), and opening it for use is one clear error.

An ext4 image on a loop device mounted read-only (`loopdisk`: root, else skipped with the
reason); the database is written by a child process before the image is remounted.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from loopdisk import make_image, mounted

from vecdb.cli.main import main
from vecdb.engine import Database
from vecdb.errors import StorageError

WRITE = """
import sys
import numpy as np
from vecdb.engine import Database
with Database(sys.argv[1], settings={"idle_seconds": 3600.0}) as db:
    db.create_collection("c", dim=4, metric="l2", index="spann")
    db.upsert("c", list(range(50)), np.random.default_rng(1).standard_normal((50, 4)))
    db.optimize("c")
    db.upsert("c", [100], np.ones((1, 4), np.float32))  # in the WAL and the op log only
    db.create_collection("d", dim=4, kind="multivector")
    db.upsert_documents("d", [1, 2], [np.ones((3, 4), np.float32), np.eye(4, dtype=np.float32)])
    db.optimize("d")
    db.create_snapshot("c")
"""


def test_inspect_reads_a_read_only_file_system(tmp_path: Path) -> None:
    image, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    make_image(image, 64)
    with mounted(image, mnt):
        subprocess.run([sys.executable, "-c", WRITE, str(mnt / "data")], check=True)
    leftovers = set(Path(tempfile.gettempdir()).glob("vecdb-readonly-*"))
    with mounted(image, mnt, "ro"):
        data = mnt / "data"
        out = CliRunner().invoke(main, ["inspect", str(data)])
        assert out.exit_code == 0, out.output
        assert "c: 51 points, 1 not yet indexed" in out.output, out.output
        assert "d: 2 documents" in out.output, out.output
        out = CliRunner().invoke(main, ["inspect", str(data), "--verify"])
        assert out.exit_code == 0, out.output
        assert "0 damaged" in out.output and "RocksDB: " in out.output, out.output
        with pytest.raises(StorageError, match="Read-only file system"):
            Database(data)
    assert set(Path(tempfile.gettempdir()).glob("vecdb-readonly-*")) == leftovers
