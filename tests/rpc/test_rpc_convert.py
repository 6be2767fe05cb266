"""`vecdb.rpc.convert`: every value survives the trip to protobuf bytes and back, malformed
messages are InvalidArgument, and every error class maps to its status code and back."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vecdb import errors
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import CollectionInfo, IdType, IndexKind, Metric, Record, SearchResult


def _wire(msg):  # type: ignore[no-untyped-def]
    return type(msg).FromString(msg.SerializeToString())


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=9),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    )
)
def test_vectors_round_trip_bit_exact(arr: np.ndarray) -> None:
    """float32 matrices (NaN and inf included) come back bit-identical, shape kept."""
    back = convert.vectors_from_proto(_wire(convert.vectors_to_proto(arr)))
    assert back.shape == arr.shape and back.tobytes() == arr.tobytes()


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20),
        st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=20),
    )
)
def test_ids_round_trip(ids: list) -> None:  # type: ignore[type-arg]
    """int64 and Unicode string ids come back equal and in order."""
    assert convert.ids_from_proto(_wire(convert.ids_to_proto(ids))) == ids


def test_ids_that_cannot_travel_are_invalid_argument() -> None:
    """Mixed types, bools, floats, 2**63 and lone surrogates are refused client-side."""
    for bad in ([1, "a"], [True], [1.5], [2**63], ["\ud800"], "abc", 5):
        with pytest.raises(errors.InvalidArgument):
            convert.ids_to_proto(bad)


def test_malformed_blobs_and_json_are_invalid_argument() -> None:
    """Wrong blob lengths, invalid UTF-8 ids and bad JSON never raise anything else."""
    with pytest.raises(errors.InvalidArgument, match="multiple of 4"):
        convert.vectors_from_proto(pb.Vectors(dim=1, count=1, data=b"abc"))
    with pytest.raises(errors.InvalidArgument, match="count=2 x dim=1"):
        convert.vectors_from_proto(pb.Vectors(dim=1, count=2, data=b"abcd"))
    with pytest.raises(errors.InvalidArgument, match="UTF-8"):
        convert.ids_from_proto(pb.Ids(strs=pb.StrIds(values=[b"\xc3"])))
    with pytest.raises(errors.InvalidArgument, match="payloads\\[1\\]"):
        convert.payloads_from_proto([b"{}", b"[1,"])
    with pytest.raises(errors.InvalidArgument):
        convert.loads_json(b"[" * 100_000, "filter")


def test_search_results_round_trip_with_padding_and_payloads() -> None:
    """Int ids padded -1 / str ids padded None, +inf padding and per-row payloads survive."""
    ids = np.array([[4, 2, -1], [7, -1, -1]], np.int64)
    dist = np.array([[0.1, 0.2, np.inf], [0.0, np.inf, np.inf]], np.float32)
    pays = [[{"a": 1}, None, None], [{"b": [1, 2]}, None, None]]  # one per column, as the engine
    back = convert.result_from_proto(_wire(convert.result_to_proto(SearchResult(ids, dist, pays))))
    assert back.ids.tolist() == ids.tolist() and back.ids.dtype == np.int64
    assert back.distances.tobytes() == dist.tobytes() and back.payloads == pays
    sids = np.array([["x", None], ["日本", "y"]], dtype=object)
    sd = np.array([[0.5, np.inf], [0.1, 0.2]], np.float32)
    back = convert.result_from_proto(_wire(convert.result_to_proto(SearchResult(sids, sd))))
    assert back.ids.tolist() == sids.tolist() and back.payloads is None


def test_records_and_collection_info_round_trip() -> None:
    """get answers and collection descriptions come back equal."""
    recs = [Record(5, np.array([1, 2], np.float32), {"t": "é"}), Record(9, np.zeros(2, np.float32))]
    back = convert.records_from_proto(_wire(convert.records_to_proto(recs)))
    assert [(r.id, r.vector.tolist(), r.payload) for r in back] == [
        (r.id, r.vector.tolist(), r.payload) for r in recs
    ]
    assert convert.records_from_proto(_wire(convert.records_to_proto([]))) == []
    info = CollectionInfo("c", 8, Metric.IP, id_type=IdType.STR, index=IndexKind.SPANN, count=3,
                          index_params={"ratio": 0.1})  # fmt: skip
    assert convert.info_from_proto(_wire(convert.info_to_proto(info))) == info


@pytest.mark.parametrize("code", sorted(errors.ERROR_BY_CODE))
def test_every_error_class_maps_to_its_status_and_back(code: str) -> None:
    """status_of and error_from_status are inverse for every class in ERROR_BY_CODE."""
    cls = errors.ERROR_BY_CODE[code]
    status = convert.status_of(cls("m"))
    assert status == grpc.StatusCode[code]
    back = convert.error_from_status(status, "why")
    assert type(back) is cls and back.message == "why"


def test_subclasses_travel_as_their_parent_code() -> None:
    """FormatError is DATA_LOSS, StorageLocked is UNAVAILABLE; unknown codes are Internal."""
    assert convert.status_of(errors.FormatError("x")) == grpc.StatusCode.DATA_LOSS
    assert convert.status_of(errors.StorageLocked("x")) == grpc.StatusCode.UNAVAILABLE
    assert type(convert.error_from_status(grpc.StatusCode.UNKNOWN, "?")) is errors.Internal
    assert type(convert.error_from_status(grpc.StatusCode.CANCELLED, None)) is errors.Internal
