"""A closed client, and TLS settings that cannot work, get vecdb errors in both modes.

Before: a remote client used after close() raised grpc's bare ValueError ("Cannot invoke RPC
on closed channel!"), which `except vecdb.VecdbError` does not catch, where an embedded one
raises Unavailable; `tls={"ca": ..., "cert": ...}` without "key" aborted the whole process
inside grpc's core (SIGABRT); an unknown key of the tls dict was a bare TypeError, a missing
file a FileNotFoundError, and a file that is no PEM a connection retried until the timeout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vecdb


def test_a_closed_client_raises_unavailable(client: vecdb.Client) -> None:
    c = client
    c.create_collection("p", dim=4, metric="l2", index="flat")
    c.upsert("p", [1], np.ones((1, 4), np.float32))
    c.close()
    calls = [
        lambda: c.count("p"),
        lambda: c.search("p", np.ones(4, np.float32), k=1),
        lambda: c.get("p", [1]),
        lambda: c.list_collections(),
    ]
    if hasattr(c, "upsert_stream"):
        calls.append(lambda: list(c.upsert_stream("p", [([2], np.ones((1, 4)), None)])))  # type: ignore[attr-defined]
    for call in calls:
        with pytest.raises(vecdb.Unavailable):
            call()


def pem(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_tls_settings_that_cannot_work_are_invalid_arguments(tmp_path: Path) -> None:
    cert = pem(tmp_path / "c.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    key = pem(tmp_path / "k.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    junk = pem(tmp_path / "j.pem", "not a certificate\n")
    cases = [
        ({"ca": cert, "cert": cert}, "tls.key", "both 'cert' and 'key'"),
        ({"ca": cert, "key": key}, "tls.cert", "both 'cert' and 'key'"),
        ({"ca": cert, "crt": cert}, "tls", "unknown keys ['crt']"),
        ({"ca": str(tmp_path / "missing.pem")}, "tls.ca", "cannot read"),
        ({"ca": junk}, "tls.ca", "is not a PEM file holding BEGIN CERTIFICATE"),
        ({"ca": cert, "cert": cert, "key": cert}, "tls.key", "PRIVATE KEY"),
        (junk, "tls.ca", "not a PEM file"),
    ]
    for tls, field, words in cases:
        with pytest.raises(vecdb.InvalidArgument) as info:
            vecdb.connect("127.0.0.1:1", tls=tls, timeout=2)
        assert info.value.field == field and words in info.value.message, tls
    # well-formed files pass the check (the handshake itself is the server's business)
    vecdb.connect("127.0.0.1:1", tls={"ca": cert, "cert": cert, "key": key}, timeout=2).close()
