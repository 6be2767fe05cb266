"""SDK collection lifecycle: create, list, get, drop, and what CollectionInfo reports."""

from __future__ import annotations

import numpy as np
import pytest

import vecdb
from vecdb.errors import AlreadyExists, InvalidArgument, NotFound
from vecdb.types import CollectionInfo


def test_create_returns_info_with_requested_fields(client: vecdb.Client) -> None:
    """create_collection returns a CollectionInfo echoing name, dim, metric, index, id_type."""
    info = client.create_collection("docs", dim=7, metric="l2", index="flat")
    assert isinstance(info, CollectionInfo)
    assert info.name == "docs"
    assert info.dim == 7
    assert info.metric == "l2"
    assert info.index == "flat"
    assert info.id_type == "int"
    assert info.kind == "dense"
    assert info.count == 0


def test_default_metric_is_cosine_and_default_index_is_known(client: vecdb.Client) -> None:
    """Omitted metric is cosine (API.md); omitted index is one of the documented kinds."""
    info = client.create_collection("docs", dim=3)
    assert info.metric == "cosine"
    assert info.index in ("flat", "spann")


def test_get_collection_matches_create_and_tracks_count(client: vecdb.Client) -> None:
    """get_collection describes the collection, and its count follows upserts and deletes."""
    created = client.create_collection("docs", dim=2, metric="ip", index="flat")
    assert client.get_collection("docs") == created
    client.upsert("docs", ids=[1, 2, 3], vectors=np.ones((3, 2), np.float32))
    assert client.get_collection("docs").count == 3
    client.delete("docs", ids=[2])
    info = client.get_collection("docs")
    assert (info.name, info.dim, info.metric, info.count) == ("docs", 2, "ip", 2)


def test_list_collections_is_sorted_by_name(client: vecdb.Client) -> None:
    """list_collections returns every collection as CollectionInfo, sorted by name."""
    assert client.list_collections() == []
    for name in ["zeta", "Alpha", "mid-1", "a_b"]:
        client.create_collection(name, dim=4, metric="l2")
    names = [c.name for c in client.list_collections()]
    assert names == sorted(["zeta", "Alpha", "mid-1", "a_b"])
    assert all(isinstance(c, CollectionInfo) for c in client.list_collections())


def test_drop_removes_collection(client: vecdb.Client) -> None:
    """After drop, the collection is gone from list and get raises NotFound."""
    client.create_collection("a", dim=2, metric="l2")
    client.create_collection("b", dim=2, metric="l2")
    client.drop_collection("a")
    assert [c.name for c in client.list_collections()] == ["b"]
    with pytest.raises(NotFound):
        client.get_collection("a")


def test_create_existing_raises_already_exists_and_keeps_original(client: vecdb.Client) -> None:
    """Re-creating a name raises AlreadyExists and leaves the original collection intact."""
    client.create_collection("docs", dim=3, metric="l2")
    client.upsert("docs", ids=[1], vectors=[[1.0, 2.0, 3.0]])
    with pytest.raises(AlreadyExists) as ei:
        client.create_collection("docs", dim=5, metric="ip")
    assert type(ei.value) is AlreadyExists
    assert "docs" in str(ei.value)
    info = client.get_collection("docs")
    assert (info.dim, info.metric, info.count) == (3, "l2", 1)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_collection("nope"),
        lambda c: c.drop_collection("nope"),
        lambda c: c.upsert("nope", ids=[1], vectors=[[0.0, 1.0]]),
        lambda c: c.get("nope", ids=[1]),
        lambda c: c.delete("nope", ids=[1]),
        lambda c: c.count("nope"),
        lambda c: c.search("nope", [0.0, 1.0], k=1),
    ],
    ids=["get_collection", "drop", "upsert", "get", "delete", "count", "search"],
)
def test_unknown_collection_raises_not_found(client: vecdb.Client, call) -> None:
    """Every operation on a collection that does not exist raises NotFound naming it."""
    client.create_collection("other", dim=2, metric="l2")
    with pytest.raises(NotFound) as ei:
        call(client)
    assert type(ei.value) is NotFound
    assert "nope" in str(ei.value)
    assert [c.name for c in client.list_collections()] == ["other"]


def test_drop_then_recreate_starts_empty(client: vecdb.Client) -> None:
    """A collection re-created under a dropped name has none of the old points or settings."""
    client.create_collection("docs", dim=2, metric="l2")
    client.upsert("docs", ids=[1, 2], vectors=[[1.0, 0.0], [0.0, 1.0]], payloads=[{"a": 1}, None])
    client.drop_collection("docs")
    info = client.create_collection("docs", dim=3, metric="ip")
    assert (info.dim, info.metric, info.count) == (3, "ip", 0)
    assert client.count("docs") == 0
    assert client.get("docs", ids=[1, 2]) == []
    client.upsert("docs", ids=[1], vectors=[[0.0, 0.0, 1.0]])
    (rec,) = client.get("docs", ids=[1])
    assert rec.vector.tolist() == [0.0, 0.0, 1.0]
    assert rec.payload is None
    res = client.search("docs", np.array([[1.0, 0.0, 0.0]], np.float32), k=3)
    assert res.ids.tolist() == [[1, -1, -1]]
    assert client.count("docs") == 1


def test_drop_leaves_other_collections_untouched(client: vecdb.Client) -> None:
    """Dropping one collection does not remove points of another."""
    client.create_collection("a", dim=2, metric="l2")
    client.create_collection("b", dim=2, metric="l2")
    client.upsert("a", ids=[1], vectors=[[1.0, 1.0]])
    client.upsert("b", ids=[1], vectors=[[2.0, 2.0]])
    client.drop_collection("a")
    assert client.count("b") == 1
    assert client.get("b", ids=[1])[0].vector.tolist() == [2.0, 2.0]


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_each_metric_is_accepted(client: vecdb.Client, metric: str) -> None:
    """l2, ip and cosine are valid metrics and are reported back."""
    info = client.create_collection("m", dim=4, metric=metric)
    assert info.metric == metric
    assert client.get_collection("m").metric == metric


@pytest.mark.parametrize("metric", ["dot", "euclidean", "", "hamming"])
def test_unknown_metric_is_rejected(client: vecdb.Client, metric: str) -> None:
    """An unknown metric raises InvalidArgument naming the field, and creates nothing."""
    with pytest.raises(InvalidArgument) as ei:
        client.create_collection("m", dim=4, metric=metric)
    assert type(ei.value) is InvalidArgument
    assert "metric" in str(ei.value)
    assert client.list_collections() == []


def test_str_id_type_is_reported(client: vecdb.Client) -> None:
    """id_type="str" is accepted and reported by create, get and list."""
    info = client.create_collection("s", dim=2, metric="l2", id_type="str")
    assert info.id_type == "str"
    assert client.get_collection("s").id_type == "str"
    assert client.list_collections()[0].id_type == "str"


def test_collections_with_same_ids_are_independent(client: vecdb.Client) -> None:
    """The same id in two collections names two different points."""
    client.create_collection("a", dim=2, metric="l2")
    client.create_collection("b", dim=2, metric="l2")
    client.upsert("a", ids=[5], vectors=[[1.0, 0.0]], payloads=[{"in": "a"}])
    client.upsert("b", ids=[5], vectors=[[0.0, 1.0]], payloads=[{"in": "b"}])
    client.delete("a", ids=[5])
    assert client.count("a") == 0
    (rec,) = client.get("b", ids=[5])
    assert rec.payload == {"in": "b"}
