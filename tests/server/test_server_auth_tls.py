"""API keys, TLS and mTLS on loopback: who gets in, who may write, what the failures look like.

Keys: no key or an unknown key is UNAUTHENTICATED, a read-only key writing is
PERMISSION_DENIED, health stays open for probes. TLS: a client trusting the CA gets in, a
plaintext client or one trusting another CA cannot connect (UNAVAILABLE); mTLS additionally
refuses clients without a certificate signed by the configured client CA.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from wire_helpers import DIM, health_status

import vecdb
from vecdb.client.remote import TLS
from vecdb.server.app import VecdbServer
from vecdb.server.auth import KeyRing, Role, presented_key

ADMIN, READER = "admin-key-0123456789", "reader-key-9876543210"


@pytest.fixture
def keyed(start_server: Callable[..., VecdbServer]) -> VecdbServer:
    """A server with an admin key and a read-only key, holding one small collection."""
    srv = start_server(auth={"admin_key": ADMIN, "read_only_keys": [READER]})
    with vecdb.connect(f"127.0.0.1:{srv.port}", api_key=ADMIN) as c:
        c.create_collection("base", DIM, "l2", index="flat")
        c.upsert("base", [1, 2], np.eye(2, DIM))
    return srv


@pytest.mark.parametrize("key", [None, "wrong-key", ""], ids=["no key", "unknown key", "empty"])
def test_missing_or_unknown_key_is_unauthenticated(keyed: VecdbServer, key: str | None) -> None:
    """Without a valid key every call is UNAUTHENTICATED, reads included."""
    with vecdb.connect(f"127.0.0.1:{keyed.port}", api_key=key) as c:
        with pytest.raises(vecdb.Unauthenticated):
            c.count("base")
        with pytest.raises(vecdb.Unauthenticated):
            c.list_collections()


def test_read_only_key_reads_but_may_not_write(keyed: VecdbServer) -> None:
    """A read-only key searches and counts; upsert, delete, create, drop are PERMISSION_DENIED."""
    with vecdb.connect(f"127.0.0.1:{keyed.port}", api_key=READER) as c:
        assert c.count("base") == 2
        assert c.search("base", np.ones(DIM), k=1).ids.shape == (1, 1)
        for write in (
            lambda: c.upsert("base", [3], np.ones((1, DIM))),
            lambda: c.delete("base", [1]),
            lambda: c.create_collection("other", DIM),
            lambda: c.drop_collection("base"),
            lambda: c.optimize("base"),
        ):
            with pytest.raises(vecdb.PermissionDenied):
                write()
        assert c.count("base") == 2


def test_admin_key_may_write_and_api_key_header_alias_works(keyed: VecdbServer) -> None:
    """The admin key writes; `api-key: <key>` metadata is accepted like the Bearer form."""
    with vecdb.connect(f"127.0.0.1:{keyed.port}", api_key=ADMIN) as c:
        assert c.upsert("base", [3], np.ones((1, DIM))) == 1
    with grpc.insecure_channel(f"127.0.0.1:{keyed.port}") as ch:
        from vecdb.rpc.v1 import vecdb_pb2 as pb
        from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc

        resp = pb_grpc.VectorDBStub(ch).Count(
            pb.CountRequest(collection="base"), metadata=(("api-key", READER),), timeout=5
        )
    assert resp.count == 3


def test_health_answers_without_a_key(keyed: VecdbServer) -> None:
    """Kubernetes probes carry no key: health is not behind auth."""
    assert health_status(keyed.port) == "SERVING"


def test_keyring_keeps_only_digests_and_parses_metadata() -> None:
    """Keys are stored hashed; both metadata spellings are understood."""
    ring = KeyRing(ADMIN, [READER])
    assert ADMIN.encode() not in repr(ring.__dict__).encode()
    assert ring.authenticate([("authorization", f"Bearer {READER}")]) is Role.READ
    assert ring.authenticate([("api-key", ADMIN)]) is Role.ADMIN
    assert presented_key([("authorization", "Basic abc")]) is None
    assert KeyRing().authenticate(None) is Role.ADMIN  # no keys configured: open


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(start_server: Callable[..., VecdbServer], certs: dict[str, str]) -> VecdbServer:
    return start_server(tls={"cert": certs["server"], "key": certs["server_key"]})


@pytest.fixture
def mtls_server(start_server: Callable[..., VecdbServer], certs: dict[str, str]) -> VecdbServer:
    return start_server(
        tls={"cert": certs["server"], "key": certs["server_key"], "client_ca": certs["ca"]}
    )


def test_tls_client_trusting_the_ca_connects(
    tls_server: VecdbServer, certs: dict[str, str]
) -> None:
    """grpcs:// with the CA file: calls work end to end."""
    with vecdb.connect(f"grpcs://127.0.0.1:{tls_server.port}", tls=certs["ca"]) as c:
        c.create_collection("t", DIM, "l2", index="flat")
        assert c.upsert("t", [1], np.ones((1, DIM))) == 1
        assert c.count("t") == 1


@pytest.mark.parametrize("how", ["plaintext", "untrusted CA"])
def test_tls_refuses_plaintext_and_untrusted_clients(
    tls_server: VecdbServer, certs: dict[str, str], how: str
) -> None:
    """A plaintext client or one that does not trust the server's CA gets UNAVAILABLE."""
    tls = None if how == "plaintext" else certs["rogue_ca"]
    with vecdb.connect(f"127.0.0.1:{tls_server.port}", tls=tls, timeout=2) as c:
        with pytest.raises(vecdb.Unavailable):
            c.list_collections()


def test_mtls_requires_a_client_certificate_from_the_client_ca(
    mtls_server: VecdbServer, certs: dict[str, str]
) -> None:
    """mTLS: no client certificate or one from another CA fails; a CA-signed one works."""
    target = f"grpcs://127.0.0.1:{mtls_server.port}"
    with vecdb.connect(target, tls=TLS(ca=certs["ca"]), timeout=2) as c:
        with pytest.raises(vecdb.Unavailable):
            c.list_collections()
    rogue = TLS(ca=certs["ca"], cert=certs["rogue"], key=certs["rogue_key"])
    with vecdb.connect(target, tls=rogue, timeout=2) as c:
        with pytest.raises(vecdb.Unavailable):
            c.list_collections()
    good = {"ca": certs["ca"], "cert": certs["client"], "key": certs["client_key"]}
    with vecdb.connect(target, tls=good) as c:
        assert c.list_collections() == []
    creds = grpc.ssl_channel_credentials(
        Path(certs["ca"]).read_bytes(), Path(certs["client_key"]).read_bytes(),
        Path(certs["client"]).read_bytes(),
    )  # fmt: skip
    assert health_status(mtls_server.port, credentials=creds) == "SERVING"


def test_tls_config_must_be_complete(tmp_path: Path, certs: dict[str, str]) -> None:
    """A certificate without its key, or a client CA without TLS, is a config error."""
    from vecdb.server.config import load_config

    with pytest.raises(vecdb.InvalidArgument, match="tls.cert and tls.key"):
        load_config(env={}, overrides={"tls": {"cert": certs["server"]}})
    with pytest.raises(vecdb.InvalidArgument, match="client_ca"):
        load_config(env={}, overrides={"tls": {"client_ca": certs["ca"]}})


@pytest.mark.parametrize("wrong", ["key of another certificate", "not a PEM", "client_ca"])
def test_unusable_tls_files_are_named_not_the_port(
    start_server: Callable[..., VecdbServer], certs: dict[str, str], tmp_path: Path, wrong: str
) -> None:
    """A key that is not the certificate's, a file that is no PEM, or a client CA that is no
    certificate stops the start with InvalidArgument naming the TLS files (grpc said "Failed
    to bind to address", pointing at the port)."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem file\n")
    tls = {"cert": certs["server"], "key": certs["server_key"]}
    if wrong == "key of another certificate":
        tls["key"] = certs["client_key"]
    elif wrong == "not a PEM":
        tls["cert"] = str(junk)
    else:
        tls["client_ca"] = str(junk)
    with pytest.raises(vecdb.InvalidArgument) as info:
        start_server(tls=tls)
    assert info.value.field == "tls" and "cannot be used" in info.value.message
    assert "bind" not in info.value.message
