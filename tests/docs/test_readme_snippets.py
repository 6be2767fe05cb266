"""Every ```python block of README.md runs verbatim, twice in a row, in a fresh directory.

Each block runs in its own Python process with a fresh temporary working directory (so
"./vecdb-data" is new), then once more in the same directory: snippets must be re-runnable
(no `AlreadyExists` on the second run). Convention for remote snippets: they talk to
"localhost:7700" with the admin key "s3cret"; the test starts a real `vecdb serve` process on
an ephemeral loopback port with that key and substitutes its address for "localhost:7700",
so the README keeps the text a user would type.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vecdb.bench.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
REMOTE = "localhost:7700"  # the address remote snippets use
API_KEY = "s3cret"  # the admin key remote snippets pass
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def snippets() -> list[tuple[str, str]]:
    """(id, code) of every python block, numbered with its first line in README.md."""
    text = README.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start()) + 2
        out.append((f"README.md:{line}", m.group(1)))
    return out


SNIPPETS = snippets()


def test_readme_has_snippets_of_both_modes() -> None:
    """The extraction finds the embedded and the remote examples."""
    codes = [c for _, c in SNIPPETS]
    assert len(codes) >= 4
    assert any(REMOTE in c for c in codes) and any("./vecdb-data" in c for c in codes)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `vecdb serve` child process requiring the README's admin key; yields its address."""
    old = {k: os.environ.get(k) for k in ("VECDB_API_KEY", "PYTHONPATH")}
    os.environ.update(VECDB_API_KEY=API_KEY, PYTHONPATH=str(ROOT))
    try:
        srv = ServerProcess(tmp_path_factory.mktemp("served"), threads=2)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield srv.address
    srv.stop()


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_snippet_runs_twice(
    where: str, code: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The block exits 0 on a first and a second run in the same fresh directory."""
    if REMOTE in code:
        code = code.replace(REMOTE, request.getfixturevalue("server"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("VECDB_API_KEY", None)  # the snippet passes its key itself
    for run in (1, 2):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{where}, run {run}:\n{proc.stderr[-3000:]}"
