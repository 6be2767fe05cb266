"""Regenerate the committed gRPC code in `vecdb/rpc/v1/` from `proto/vecdb/v1/vecdb.proto`.

`make proto` runs `python -m vecdb.rpc.generate`; `tests/rpc/test_rpc_generated_code.py` runs
`generate(tmp)` and compares, so the committed `vecdb_pb2.py`, `vecdb_pb2.pyi` and
`vecdb_pb2_grpc.py` never drift from the .proto. The .proto sits at a path matching its
package (`vecdb/v1/`, as other languages' tools expect), so protoc writes Python modules named
`vecdb.v1.*`; they are moved under `vecdb/rpc/v1/` and the one cross-module import is rewritten
to match. Needs `grpcio-tools` (the dev extra) and nothing else from vecdb; it must not import
the generated modules themselves.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILE = "vecdb/v1/vecdb.proto"
PACKAGE_DIR = Path("vecdb") / "rpc" / "v1"  # where the generated modules live
GENERATED = ("vecdb_pb2.py", "vecdb_pb2.pyi", "vecdb_pb2_grpc.py")
_IMPORT_FROM, _IMPORT_TO = b"from vecdb.v1 import vecdb_pb2", b"from vecdb.rpc.v1 import vecdb_pb2"


def protoc(out: Path, *extra: str) -> None:
    """Run protoc on the vecdb proto (and the well-known protos) writing Python under `out`."""
    from grpc_tools import protoc as tool  # dev-only dependency, imported on use

    include = Path(tool.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}",
            f"--grpc_python_out={out}", *extra, str(PROTO_ROOT / PROTO_FILE)]  # fmt: skip
    rc = tool.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")


def generate(out_root: Path | str = REPO_ROOT) -> list[Path]:
    """Generate the modules into `out_root/vecdb/rpc/v1/`; return the files written."""
    target = Path(out_root) / PACKAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        protoc(Path(tmp), f"--pyi_out={tmp}")
        for name in GENERATED:
            text = (Path(tmp) / "vecdb" / "v1" / name).read_bytes()
            (target / name).write_bytes(text.replace(_IMPORT_FROM, _IMPORT_TO))
            written.append(target / name)
    return written


def main() -> int:
    """Entry point of `python -m vecdb.rpc.generate`."""
    for path in generate():
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
