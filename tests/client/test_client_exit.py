"""An embedded client left open when the interpreter exits closes its database cleanly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from vecdb.client import connect

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from vecdb.client import connect

    c = connect(sys.argv[1])
    c.create_collection("g", 8, "l2")
    x = np.random.default_rng(0).standard_normal((3000, 8)).astype("float32")
    c.upsert("g", np.arange(3000), x)
    c.optimize("g", wait=True)
    print(c.search("g", x[:2], 3).ids[:, 0].tolist())
    # no close(): the interpreter exits with the client, its SPANN posting file open
    """
)


def test_an_unclosed_client_with_a_spann_index_exits_without_an_error(tmp_path: Path) -> None:
    """Interpreter exit runs the client's close; the posting file's descriptor must still be
    open then (it was closed first by its own finalizer, and close() closed it again: EBADF
    in a traceback, or another file's descriptor if the number had been reused)."""
    data = tmp_path / "db"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(data)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 1]"
    assert "Traceback" not in done.stderr and "Bad file descriptor" not in done.stderr
    assert any(data.rglob("postings*.bin"))  # the index was a SPANN one, on disk
    with connect(data) as c:
        assert c.count("g") == 3000
        assert c.search("g", [0.0] * 8, 1).ids.shape == (1, 1)
