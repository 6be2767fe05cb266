"""Regenerate the committed gRPC code in `vecdb/rpc/` from `proto/vecdb/rpc/vecdb.proto`.

`make proto` runs `python -m vecdb.rpc.generate`; `tests/rpc/test_generated_code.py` runs
`generate(tmp)` and compares, so the committed `vecdb_pb2.py`, `vecdb_pb2.pyi` and
`vecdb_pb2_grpc.py` never drift from the .proto. Needs `grpcio-tools` (the dev extra) and
nothing else from vecdb; it must not import the generated modules themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILE = "vecdb/rpc/vecdb.proto"
GENERATED = ("vecdb_pb2.py", "vecdb_pb2.pyi", "vecdb_pb2_grpc.py")


def generate(out_root: Path | str = REPO_ROOT) -> list[Path]:
    """Run protoc on the vecdb proto, writing under `out_root/vecdb/rpc/`; return the files."""
    from grpc_tools import protoc  # dev-only dependency, imported on use

    out = Path(out_root)
    (out / "vecdb" / "rpc").mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_ROOT / PROTO_FILE),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
    return [out / "vecdb" / "rpc" / name for name in GENERATED]


def main() -> int:
    """Entry point of `python -m vecdb.rpc.generate`."""
    for path in generate():
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
