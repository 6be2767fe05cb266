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
        (generate.REPO_ROOT / generate.PACKAGE_DIR / "vecdb_pb2_grpc.py").read_text(),
    )
    assert committed_with is not None
    have = importlib.metadata.version("grpcio-tools")
    if have != committed_with.group(1):
        pytest.skip(f"grpcio-tools {have} installed; the code was generated with "
                    f"{committed_with.group(1)} (pin it in the dev extra)")  # fmt: skip
    fresh = generate.generate(tmp_path)
    committed = generate.REPO_ROOT / generate.PACKAGE_DIR
    assert fresh, "generate() produced no files"
    for path in fresh:
        mine = (committed / path.name).read_bytes()
        assert path.read_bytes() == mine, f"{path.name} is stale: run `make proto` and commit"


def test_every_message_field_and_rpc_has_a_comment() -> None:
    """Each message, enum, enum value, field, oneof and rpc line is preceded by a // comment."""
    text = (generate.PROTO_ROOT / generate.PROTO_FILE).read_text().splitlines()
    decl = re.compile(r"^\s*((message|rpc|oneof|service|enum)\b|[\w.<>, ]*\b\w+\s*=\s*\d+;)")
    missing = [
        (n + 1, line.strip())
        for n, line in enumerate(text)
        if decl.match(line) and not text[n - 1].strip().startswith("//")
    ]
    assert missing == []
    assert sum(1 for line in text if decl.match(line)) > 150  # the pattern does match fields


def test_proto_path_matches_its_package_and_names_other_languages() -> None:
    """proto/vecdb/v1/vecdb.proto declares package vecdb.v1 and the language package options."""
    text = (generate.PROTO_ROOT / generate.PROTO_FILE).read_text()
    assert generate.PROTO_FILE == "vecdb/v1/vecdb.proto" and "\npackage vecdb.v1;" in text
    for option in ("go_package", "java_package", "csharp_namespace", "php_namespace"):
        assert f"option {option} =" in text
