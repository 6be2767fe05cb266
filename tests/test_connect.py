"""`vecdb.connect`: every accepted target form reaches the right database, ambiguous targets
and remote-only options with a local target are refused, and ":memory:" clients that are
never closed clean up after themselves.

Remote forms are tried against real servers on 127.0.0.1 (plaintext and TLS, certificates
made with the openssl CLI by the server tests' helper).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import vecdb
from vecdb.client import resolve
from vecdb.engine.settings import EngineSettings
from vecdb.server.app import VecdbServer

ROOT = Path(__file__).resolve().parents[1]  # the repository: children import this vecdb
sys.path.insert(0, str(Path(__file__).parent / "server"))
from wire_helpers import make_certs, server_config  # noqa: E402


@pytest.mark.parametrize(
    ("target", "kind", "where"),
    [
        ("./data", "local", "./data"),
        ("/var/lib/vecdb", "local", "/var/lib/vecdb"),
        ("../up/db", "local", "../up/db"),
        ("a/b", "local", "a/b"),
        (".hidden", "local", ".hidden"),
        (":memory:", "memory", ":memory:"),
        ("localhost:7700", "remote", "localhost:7700"),
        ("127.0.0.1:1", "remote", "127.0.0.1:1"),
        ("[::1]:7700", "remote", "[::1]:7700"),
        ("grpc://db.example.com:80", "remote", "grpc://db.example.com:80"),
        ("grpcs://h:443/", "remote", "grpcs://h:443"),
        ("http://localhost:7700", "remote", "grpc://localhost:7700"),
        ("HTTPS://localhost", "remote", "grpcs://localhost:7700"),
        ("grpc://localhost", "remote", "grpc://localhost:7700"),
    ],
)
def test_target_forms_resolve(target: str, kind: str, where: str) -> None:
    """Each accepted form names the mode and address the documented rule says."""
    t = resolve(target)
    assert (t.kind, t.where) == (kind, where)


def test_path_objects_are_always_local() -> None:
    """A pathlib.Path is a directory even when its text has no separator."""
    assert resolve(Path("mydb")).kind == "local"
    assert resolve(Path("localhost:7700")).kind == "local"


@pytest.mark.parametrize(
    "target",
    ["localhost", "mydb", "db.example.com", "localhost:http", "ftp://h:1", "http://h:1/x", ""],
)
def test_ambiguous_or_unknown_targets_are_refused(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """InvalidArgument naming the accepted forms; no directory is created."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(vecdb.InvalidArgument, match=r'":memory:", "host:port"') as err:
        vecdb.connect(target)
    assert "https://host[:port]" in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", [{"api_key": "k"}, {"tls": True}, {"tls": "/ca.pem"}])
@pytest.mark.parametrize("target", ["./db", ":memory:"])
def test_remote_options_with_a_local_target_are_refused(
    option: dict[str, object], target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """api_key / tls with a local path or :memory: is InvalidArgument, nothing is opened."""
    monkeypatch.chdir(tmp_path)
    name = next(iter(option))
    with pytest.raises(vecdb.InvalidArgument, match=f"{name} applies to remote") as err:
        vecdb.connect(target, **option)  # type: ignore[arg-type]
    assert err.value.field == name
    assert list(tmp_path.iterdir()) == []


def test_local_forms_open_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ "./dir", an absolute path and a Path open the same data directory in turn."""
    monkeypatch.chdir(tmp_path)
    with vecdb.connect("./db") as c:
        c.create_collection("x", dim=2, metric="l2", index="flat")
    for target in (str(tmp_path / "db"), tmp_path / "db", Path("db")):
        with vecdb.connect(target) as c:
            assert [i.name for i in c.list_collections()] == ["x"]


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[VecdbServer]:
    srv = VecdbServer(server_config(tmp_path / "plain")).start()
    yield srv
    srv.stop(grace=0)


@pytest.mark.parametrize("form", ["{}", "grpc://{}", "http://{}", "http://{}/"])
def test_plaintext_remote_forms_reach_the_server(plain: VecdbServer, form: str) -> None:
    """host:port, grpc:// and http:// are the same plaintext gRPC connection."""
    with vecdb.connect(form.format(f"127.0.0.1:{plain.port}"), timeout=10) as c:
        c.create_collection("r", dim=2, metric="l2", index="flat")
        c.upsert("r", [1], np.ones((1, 2), np.float32))
        assert c.count("r") == 1
        c.drop_collection("r")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make test certificates")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.mark.parametrize("scheme", ["grpcs", "https"])
def test_tls_remote_forms_reach_a_tls_server(
    tmp_path: Path, certs: dict[str, str], scheme: str
) -> None:
    """grpcs:// and https:// are gRPC over TLS; a plaintext form cannot reach that server."""
    tls = {"cert": certs["server"], "key": certs["server_key"]}
    srv = VecdbServer(server_config(tmp_path / "tls", tls=tls)).start()
    try:
        with vecdb.connect(f"{scheme}://127.0.0.1:{srv.port}", tls=certs["ca"]) as c:
            assert c.list_collections() == []
        with vecdb.connect(f"http://127.0.0.1:{srv.port}", timeout=2) as c:
            with pytest.raises(vecdb.Unavailable):
                c.list_collections()
    finally:
        srv.stop(grace=0)


def test_unclosed_memory_client_removes_its_temp_dir() -> None:
    """A ":memory:" client dropped without close: its directory is gone after collection."""
    c = vecdb.connect(":memory:")
    path = c.path  # type: ignore[attr-defined]
    c.create_collection("m", dim=2, metric="l2", index="flat")
    assert path.is_dir()
    del c
    gc.collect()
    assert not path.exists()


def test_memory_client_left_open_at_exit_removes_its_temp_dir(tmp_path: Path) -> None:
    """A process that exits with a ":memory:" client still open leaves no temp dir."""
    code = (
        "import vecdb\n"
        "c = vecdb.connect(':memory:')\n"
        "c.create_collection('m', dim=2, metric='l2', index='flat')\n"
        "print(c.path)\n"
        "keep = [c]\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.name.startswith("vecdb-mem-")
    assert not path.exists()


def test_first_build_follows_the_buffer_cap(tmp_path: Path) -> None:
    """`bulk_build_bytes` 0 (the default) starts the first build at half of
    `buffer_max_bytes`, whatever cap is set: with a 2 MiB cap and no quiet-time trigger, 1.1
    MiB of writes are built without an optimize (a fixed 512 MiB threshold never would);
    an explicit value still rules. (`rebuild_max_bytes` at the cap's half: the buffer does
    not spill to files past it, `tests/engine/test_engine_spill.py`.)"""
    assert EngineSettings.parse({}).first_build_bytes == 512 << 20
    assert EngineSettings.parse({"buffer_max_bytes": 1 << 30, "bulk_build_bytes": 3 << 20}
                                ).first_build_bytes == 3 << 20  # fmt: skip
    engine = {"buffer_max_bytes": 2 << 20, "idle_seconds": 86_400, "build_min_vectors": 10**9,
              "rebuild_max_bytes": 1 << 20}  # fmt: skip
    assert EngineSettings.parse(engine).spill_build_bytes == 0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4500, 64)).astype(np.float32)  # 1.1 MiB
    with vecdb.connect(tmp_path / "db", engine=engine) as c:
        c.create_collection("x", dim=64, metric="l2", index="spann")
        c.upsert("x", list(range(len(x))), x)
        deadline = time.monotonic() + 60
        while c.get_collection("x").indexed < len(x) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.get_collection("x").indexed == len(x)


def test_engine_settings_reach_an_embedded_database(tmp_path: Path) -> None:
    """`engine=` sets the embedded database's engine: with a 1 MiB write buffer, no stall and
    nothing drained, a write past the cap is refused; a bad setting is refused by name before
    anything is opened; a remote target refuses `engine` (its server's config rules)."""
    engine = {"buffer_max_bytes": 1 << 20, "stall_timeout": 0, "idle_seconds": 86_400,
              "bulk_build_bytes": 1 << 30, "build_min_vectors": 10**9}  # fmt: skip
    x = np.ones((2048, 64), np.float32)  # 512 KiB
    with vecdb.connect(tmp_path / "db", engine=engine) as c:
        c.create_collection("x", dim=64, metric="l2", index="spann")
        c.upsert("x", list(range(2048)), x)
        c.upsert("x", list(range(2048, 4096)), x)
        with pytest.raises(vecdb.ResourceExhausted):
            c.upsert("x", list(range(4096, 6144)), x)
        assert c.count("x") == 4096
    with pytest.raises(vecdb.InvalidArgument, match="drain_vectorz") as bad:
        vecdb.connect(tmp_path / "other", engine={"drain_vectorz": 5})
    assert bad.value.field == "engine.drain_vectorz"
    with pytest.raises(vecdb.InvalidArgument, match=r"must be in \[") as low:
        vecdb.connect(tmp_path / "other", engine={"buffer_max_bytes": 1})
    assert low.value.field == "engine.buffer_max_bytes"
    assert not (tmp_path / "other").exists()
    with pytest.raises(vecdb.InvalidArgument, match="engine settings apply to embedded") as rem:
        vecdb.connect("127.0.0.1:1", engine={"drain_vectors": 5})
    assert rem.value.field == "engine"


def test_a_directory_of_a_newer_data_format_is_refused_untouched(tmp_path: Path) -> None:
    """A data directory a newer vecdb wrote is refused (FormatError naming the format) and
    left as it was: before, its *.tmp files were deleted before the format was read, and
    the error was Unavailable (retryable)."""
    import json

    from vecdb.engine.database import MANIFEST_NAME
    from vecdb.errors import FormatError
    from vecdb.storage.manifest import write_manifest

    db = tmp_path / "db"
    vecdb.connect(str(db)).close()
    body = json.loads((db / MANIFEST_NAME).read_text())["body"]
    write_manifest(db / MANIFEST_NAME, {**body, "data_format": 99})
    (db / "publish.tmp").write_bytes(b"a newer vecdb's half-written file")
    with pytest.raises(FormatError, match="data format 99 is not supported"):
        vecdb.connect(str(db))
    assert (db / "publish.tmp").exists()
