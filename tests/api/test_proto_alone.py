"""A client written from proto/vecdb/v1/vecdb.proto alone, standing in for another language.

The .proto is compiled with grpc_tools into a temporary directory, and a separate Python
process that cannot import vecdb (no site hooks, so not even the editable install) talks to a
real server through that generated stub: enums, vectors as bytes, JSON payloads, pagination,
and an error whose google.rpc details (BadRequest field, ErrorInfo reason) it decodes with the
standard googleapis messages.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from vecdb.rpc import generate
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config

pytest.importorskip("grpc_tools")

CLIENT = r"""
import json, struct, sys
sys.path[:0] = [GEN, SITE]
import grpc
from vecdb.v1 import vecdb_pb2 as pb, vecdb_pb2_grpc as rpc
from google.rpc import error_details_pb2, status_pb2

def vectors(rows):
    flat = [x for r in rows for x in r]
    return pb.Vectors(dim=len(rows[0]), count=len(rows), data=struct.pack(f"<{len(flat)}f", *flat))

out = {"module": pb.__file__}
stub = rpc.VectorDBStub(grpc.insecure_channel(TARGET))
for name in ("b", "a", "c"):
    stub.CreateCollection(pb.CreateCollectionRequest(
        name=name, dim=2, metric=pb.METRIC_L2, index=pb.INDEX_KIND_FLAT))
page = stub.ListCollections(pb.ListCollectionsRequest(page_size=2))
rest = stub.ListCollections(pb.ListCollectionsRequest(page_token=page.next_page_token))
out["pages"] = [[c.name for c in page.collections], [c.name for c in rest.collections],
                rest.next_page_token]
out["metric"] = pb.Metric.Name(page.collections[0].metric)
stub.Upsert(pb.UpsertRequest(collection="a", ids=pb.Ids(ints=pb.IntIds(values=[1, 2])),
            vectors=vectors([[0, 0], [1, 1]]), payloads=['{"n": 12345678901234567}', ""]))
res = stub.Search(pb.SearchRequest(collection="a", queries=vectors([[1, 1]]),
                  options=pb.SearchOptions(k=3, with_payload=True)))
out["hits"] = [list(res.ids.ints.values), list(res.found), list(res.payloads)]
try:
    stub.Upsert(pb.UpsertRequest(collection="a", ids=pb.Ids(ints=pb.IntIds(values=[3])),
                vectors=vectors([[1, 2, 3]])))
except grpc.RpcError as err:
    out["code"] = err.code().name
    for key, value in err.trailing_metadata():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            out["message"] = status.message
            for item in status.details:
                if item.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    item.Unpack(bad)
                    out["field"] = bad.field_violations[0].field
                if item.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    item.Unpack(info)
                    out["reason"], out["domain"] = info.reason, info.domain
print(json.dumps(out))
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[VecdbServer]:
    cfg = load_config(env={}, overrides={
        "server": {"data": str(tmp_path / "db"), "port": 0, "workers": 4},
        "metrics": {"enabled": False},
    })  # fmt: skip
    srv = VecdbServer(cfg).start()
    yield srv
    srv.stop(grace=0)


def test_a_client_built_from_the_proto_alone_works_and_decodes_error_details(
    server: VecdbServer, tmp_path: Path
) -> None:
    """Compile the .proto alone, call the server from a process without vecdb, decode the
    BadRequest field violation and the ErrorInfo reason of a wrong-dimension upsert."""
    gen = tmp_path / "gen"
    gen.mkdir()
    generate.protoc(gen)  # protoc on proto/vecdb/v1/vecdb.proto, nothing else
    script = CLIENT.replace("GEN", repr(str(gen))).replace(
        "SITE", repr(sysconfig.get_paths()["purelib"])).replace(
        "TARGET", repr(f"127.0.0.1:{server.port}"))  # fmt: skip
    done = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={})  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["module"].startswith(str(gen))  # the generated code, not vecdb's own
    assert out["pages"] == [["a", "b"], ["c"], ""] and out["metric"] == "METRIC_L2"
    # Integers beyond 2^53 stay exact in payloads (no Struct doubles).
    assert out["hits"] == [[2, 1, -1], [2], ["", '{"n":12345678901234567}', ""]]
    assert out["code"] == "INVALID_ARGUMENT"
    assert (out["field"], out["reason"], out["domain"]) == ("vectors[0]", "WRONG_DIMENSION",
                                                            "vecdb")  # fmt: skip
    assert out["message"] == "vectors[0]: expected 2 floats, got 3"
