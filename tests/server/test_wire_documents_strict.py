"""Document requests the proto says are unsupported or malformed, sent raw to a real server:
each is INVALID_ARGUMENT naming the field, and nothing changes. Before, SearchDocuments
ignored `with_vectors`, query weights and `single` over two queries (answering two), and an
upsert's weights without `has_weights` were dropped (the document stored unweighted).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

import vecdb
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer

D = 8
TOKENS = np.random.default_rng(0).standard_normal((3, D)).astype(np.float32)
WEIGHTS = np.ones(3, "<f4").tobytes()


def docs(n: int = 1, **fields: Any) -> pb.Documents:
    """`n` copies of TOKENS as a Documents message, with extra `fields`."""
    return pb.Documents(dim=D, count=n, data=TOKENS.tobytes() * n, token_counts=[3] * n,
                        **fields)  # fmt: skip


def search(**fields: Any) -> pb.SearchDocumentsRequest:
    fields.setdefault("queries", docs())
    fields.setdefault("options", pb.SearchOptions(k=3))
    return pb.SearchDocumentsRequest(collection="w", **fields)


CASES = [
    ("search with_vectors", "SearchDocuments",
     search(options=pb.SearchOptions(k=3, with_vectors=True)), "options.with_vectors"),
    ("search single with two queries", "SearchDocuments",
     search(queries=docs(2), single=True), "single"),
    ("search weights on a query", "SearchDocuments",
     search(queries=docs(weights=WEIGHTS, has_weights=[True])), "query.weights"),
    ("search weights without has_weights", "SearchDocuments",
     search(queries=docs(weights=WEIGHTS)), "query.has_weights"),
    ("upsert weights without has_weights", "UpsertDocuments",
     pb.UpsertDocumentsRequest(collection="w", ids=pb.Ids(ints=pb.IntIds(values=[11])),
                               documents=docs(weights=WEIGHTS)), "documents.has_weights"),
]  # fmt: skip


@pytest.fixture
def seeded(remote: vecdb.Client) -> vecdb.Client:
    remote.create_collection("w", dim=D, kind="multivector")
    remote.upsert_documents("w", [0, 1], [TOKENS, TOKENS * 2])
    return remote


@pytest.fixture
def raw(server: VecdbServer) -> Iterator[pb_grpc.VectorDBStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield pb_grpc.VectorDBStub(ch)


@pytest.mark.parametrize(("rpc", "request_", "field"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_unsupported_document_request_is_invalid_argument_naming_the_field(
    seeded: vecdb.Client, raw: pb_grpc.VectorDBStub, rpc: str, request_: Any, field: str
) -> None:
    """INVALID_ARGUMENT with the field in BadRequest and its name in the message; the
    collection is as it was (two documents, the first unweighted)."""
    with pytest.raises(grpc.RpcError) as info:
        getattr(raw, rpc)(request_, timeout=10)
    err = status.error_of(info.value)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field == field and field.split(".")[-1] in err.message
    assert seeded.count("w") == 2
    assert [d.id for d in seeded.get_documents("w", [0, 1, 11])] == [0, 1]


def test_supported_forms_still_answer(seeded: vecdb.Client, raw: pb_grpc.VectorDBStub) -> None:
    """single with one query, several queries without it, and weighted upserts that say so
    are answered as before."""
    one = raw.SearchDocuments(search(single=True), timeout=10)
    two = raw.SearchDocuments(search(queries=docs(2)), timeout=10)
    assert (one.result.nq, two.result.nq) == (1, 2)
    up = pb.UpsertDocumentsRequest(collection="w", ids=pb.Ids(ints=pb.IntIds(values=[12])),
                                   documents=docs(weights=WEIGHTS, has_weights=[True]))  # fmt: skip
    assert raw.UpsertDocuments(up, timeout=10).upserted == 1
    got = seeded.get_documents("w", [12])[0]
    assert got.weights is not None and got.weights.tolist() == [1.0, 1.0, 1.0]
