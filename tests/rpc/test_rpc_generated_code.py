"""The committed gRPC code is exactly what `make proto` generates from the .proto today, and
the proto documents every message and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vecdb.rpc import generate

pytest.importorskip("grpc_tools")


def test_committed_generated_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    """Regenerate into a temporary directory and compare byte for byte (with the grpcio-tools
    version the committed code was made with: other versions write other headers)."""
    import importlib.metadata

    committed_with = re.search(
        r"GRPC_GENERATED_VERSION = '([^']+)'",
        (Path(generate.__file__).parent / "vecdb_pb2_grpc.py").read_text(),
    )
    assert committed_with is not None
    have = importlib.metadata.version("grpcio-tools")
    if have != committed_with.group(1):
        pytest.skip(f"grpcio-tools {have} installed; the code was generated with "
                    f"{committed_with.group(1)} (pin it in the dev extra)")  # fmt: skip
    fresh = generate.generate(tmp_path)
    committed = Path(generate.__file__).parent
    assert fresh, "generate() produced no files"
    for path in fresh:
        mine = (committed / path.name).read_bytes()
        assert path.read_bytes() == mine, f"{path.name} is stale: run `make proto` and commit"


def test_every_message_field_and_rpc_has_a_comment() -> None:
    """Each message, field, oneof and rpc line is preceded by a // comment line."""
    text = (generate.PROTO_ROOT / generate.PROTO_FILE).read_text().splitlines()
    decl = re.compile(
        r"^\s*(message|rpc|oneof|service|repeated|string|bytes|bool|uint32|uint64|"
        r"int64|Ids|Vectors|CollectionInfo|SearchOptions|UpsertRequest)\b"
    )
    missing = [
        (n + 1, line.strip())
        for n, line in enumerate(text)
        if decl.match(line) and not text[n - 1].strip().startswith("//")
    ]
    assert missing == []
