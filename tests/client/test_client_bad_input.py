"""SDK bad input: one case per row of research/reliability.md §8 that the SDK can send.

Each case asserts the exact error class, that the message names the field (and the position
in a batch, e.g. "vectors[3]"), and that nothing changed: the count, the collections, and
`get` of every id the request touched. Batches put their one bad row last so a write that
is not validated as a whole would leave its good rows behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import vecdb
from vecdb import config
from vecdb.errors import AlreadyExists, InvalidArgument, NotFound


@pytest.fixture
def client(clean_client: vecdb.Client) -> vecdb.Client:
    """The module shares one client per mode (many small cases); each case starts empty."""
    return clean_client


DIM = 4
SEED_IDS = [0, 1, 2, 3]
BATCH_IDS = [1, 10, 11, 12]  # id 1 exists (a replace), the others are new; [3] is the bad one
SEED_STR = ["a", "b", "日本語", "🎉"]
BATCH_STR = ["b", "new1", "new2", "new3"]


def good_rows(n: int = 4) -> np.ndarray:
    """n distinct non-zero float32 vectors."""
    return (np.arange(1, n * DIM + 1, dtype=np.float32).reshape(n, DIM) / 10).astype(np.float32)


@pytest.fixture
def coll(client: vecdb.Client) -> str:
    """An int-id cosine collection holding SEED_IDS with payloads."""
    client.create_collection("c", dim=DIM, metric="cosine", index="flat")
    vecs = np.random.default_rng(1).standard_normal((4, DIM)).astype(np.float32)
    client.upsert("c", ids=SEED_IDS, vectors=vecs, payloads=[{"seed": i} for i in SEED_IDS])
    return "c"


@pytest.fixture
def scoll(client: vecdb.Client) -> str:
    """A str-id l2 collection holding SEED_STR."""
    client.create_collection("s", dim=DIM, metric="l2", id_type="str", index="flat")
    client.upsert("s", ids=SEED_STR, vectors=good_rows(), payloads=[{"k": s} for s in SEED_STR])
    return "s"


def state(client: vecdb.Client, name: str | None, watch: list[Any]) -> tuple[Any, ...]:
    """Everything a rejected request must not change."""
    infos = client.list_collections()
    if name is None:
        return (infos,)
    recs = client.get(name, ids=watch)
    return infos, client.count(name), [(r.id, r.vector.tobytes(), r.payload) for r in recs]


def assert_rejected(
    client: vecdb.Client,
    exc: type[Exception],
    fragments: tuple[str, ...],
    call: Callable[[], object],
    name: str | None = None,
    watch: list[Any] | None = None,
) -> str:
    """`call` raises exactly `exc` with every fragment in its message, and changes nothing."""
    watch = list(watch or [])
    before = state(client, name, watch)
    with pytest.raises(exc) as ei:
        call()
    assert type(ei.value) is exc, f"{type(ei.value).__name__}: {ei.value}"
    msg = str(ei.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in message {msg!r}"
    assert state(client, name, watch) == before
    return msg


def with_bad_row(bad: Any, as_list: bool) -> Any:
    rows = good_rows()
    if as_list:
        out = rows.tolist()
        out[3] = bad
        return out
    rows = rows.astype(np.float64)
    rows[3] = bad
    return rows


INT_WATCH = sorted(set(SEED_IDS + BATCH_IDS))
STR_WATCH = sorted(set(SEED_STR + BATCH_STR))

# -- vectors: dimension -------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5], []],
    ids=["too-short", "too-long", "empty"],
)
def test_upsert_row_of_wrong_dimension_is_rejected(client, coll, bad) -> None:
    """A stored vector of the wrong length is InvalidArgument at vectors[3]; nothing written."""
    vecs = good_rows().tolist()
    vecs[3] = bad
    assert_rejected(
        client,
        InvalidArgument,
        ("vectors[3]",),
        lambda: client.upsert(coll, ids=BATCH_IDS, vectors=vecs),
        coll,
        INT_WATCH,
    )


@pytest.mark.parametrize("width", [DIM - 1, DIM + 1, 0])
def test_upsert_matrix_of_wrong_width_is_rejected(client, coll, width) -> None:
    """A numpy matrix with the wrong number of columns is InvalidArgument naming vectors."""
    vecs = np.ones((4, width), np.float32)
    assert_rejected(
        client,
        InvalidArgument,
        ("vectors",),
        lambda: client.upsert(coll, ids=BATCH_IDS, vectors=vecs),
        coll,
        INT_WATCH,
    )


def test_upsert_three_dimensional_array_is_rejected(client, coll) -> None:
    """A 3-D vectors array is InvalidArgument naming vectors."""
    vecs = np.ones((4, DIM, 1), np.float32)
    assert_rejected(
        client,
        InvalidArgument,
        ("vectors",),
        lambda: client.upsert(coll, ids=BATCH_IDS, vectors=vecs),
        coll,
        INT_WATCH,
    )


def test_upsert_non_numeric_vector_is_rejected(client, coll) -> None:
    """A vector holding a string is InvalidArgument naming vectors."""
    vecs = good_rows().tolist()
    vecs[3] = [0.1, "x", 0.3, 0.4]
    assert_rejected(
        client,
        InvalidArgument,
        ("vectors",),
        lambda: client.upsert(coll, ids=BATCH_IDS, vectors=vecs),
        coll,
        INT_WATCH,
    )


@pytest.mark.parametrize("width", [DIM - 1, DIM + 1, 0])
def test_query_of_wrong_dimension_is_rejected(client, coll, width) -> None:
    """A (d,) query of the wrong length (short, long, empty) is InvalidArgument naming queries."""
    q = np.ones(width, np.float32)
    assert_rejected(
        client, InvalidArgument, ("queries",), lambda: client.search(coll, q, k=2), coll, INT_WATCH
    )


@pytest.mark.parametrize(
    "bad", [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5], []], ids=["too-short", "too-long", "empty"]
)
def test_query_row_of_wrong_dimension_is_rejected(client, coll, bad) -> None:
    """In a list of queries, a row of the wrong length is InvalidArgument at queries[1]."""
    q = [[0.1, 0.2, 0.3, 0.4], bad]
    assert_rejected(
        client,
        InvalidArgument,
        ("queries[1]",),
        lambda: client.search(coll, q, k=2),
        coll,
        INT_WATCH,
    )


# -- vectors: values ----------------------------------------------------------------------

BAD_VALUES = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30]
BAD_VALUE_IDS = ["nan", "+inf", "-inf", "1e30", "-1e30"]


@pytest.mark.parametrize("as_list", [True, False], ids=["list", "numpy"])
@pytest.mark.parametrize("value", BAD_VALUES, ids=BAD_VALUE_IDS)
def test_upsert_non_finite_or_huge_component_is_rejected(client, coll, value, as_list) -> None:
    """NaN, ±inf or an absurd magnitude in a stored vector is InvalidArgument at vectors[3]."""
    bad = [0.1, 0.2, value, 0.4]
    vecs = with_bad_row(bad, as_list)
    assert_rejected(
        client,
        InvalidArgument,
        ("vectors[3]",),
        lambda: client.upsert(coll, ids=BATCH_IDS, vectors=vecs),
        coll,
        INT_WATCH,
    )


@pytest.mark.parametrize("value", BAD_VALUES, ids=BAD_VALUE_IDS)
def test_query_non_finite_or_huge_component_is_rejected(client, coll, value) -> None:
    """NaN, ±inf or an absurd magnitude in a query is InvalidArgument at queries[1]."""
    q = good_rows(2).astype(np.float64)
    q[1, 2] = value
    assert_rejected(
        client,
        InvalidArgument,
        ("queries[1]",),
        lambda: client.search(coll, q, k=2),
        coll,
        INT_WATCH,
    )


@pytest.mark.parametrize("as_list", [True, False], ids=["list", "numpy"])
def test_upsert_zero_vector_under_cosine_is_rejected(client, coll, as_list) -> None:
    """An all-zero vector has no cosine: InvalidArgument at vectors[3]."""
    vecs = with_bad_row([0.0] * DIM, as_list)
    assert_rejected(
        client,
        InvalidArgument,
        ("vectors[3]",),
        lambda: client.upsert(coll, ids=BATCH_IDS, vectors=vecs),
        coll,
        INT_WATCH,
    )


def test_query_zero_vector_under_cosine_is_rejected(client, coll) -> None:
    """An all-zero query under cosine is InvalidArgument at queries[1]."""
    q = good_rows(2)
    q[1] = 0.0
    assert_rejected(
        client,
        InvalidArgument,
        ("queries[1]",),
        lambda: client.search(coll, q, k=2),
        coll,
        INT_WATCH,
    )


def test_zero_vector_is_fine_under_l2(client) -> None:
    """The zero vector is only an error under cosine: l2 stores and finds it."""
    client.create_collection("l", dim=DIM, metric="l2")
    client.upsert("l", ids=[1], vectors=np.zeros((1, DIM), np.float32))
    assert client.search("l", np.zeros(DIM, np.float32), k=1).ids.tolist() == [[1]]


# -- batches ------------------------------------------------------------------------------


def test_empty_upsert_batch_is_rejected(client, coll) -> None:
    """An upsert of no points is InvalidArgument naming ids (the engine's documented rule)."""
    assert_rejected(
        client,
        InvalidArgument,
        ("ids",),
        lambda: client.upsert(coll, ids=[], vectors=np.zeros((0, DIM), np.float32)),
        coll,
        INT_WATCH,
    )


def test_empty_delete_batch_is_rejected(client, coll) -> None:
    """A delete of no ids is InvalidArgument naming ids."""
    assert_rejected(
        client, InvalidArgument, ("ids",), lambda: client.delete(coll, ids=[]), coll, INT_WATCH
    )


def test_upsert_duplicate_ids_in_one_batch_is_rejected(client, coll) -> None:
    """A batch naming the same id twice is InvalidArgument at the second occurrence."""
    ids = [1, 10, 11, 10]
    assert_rejected(
        client,
        InvalidArgument,
        ("ids[3]",),
        lambda: client.upsert(coll, ids=ids, vectors=good_rows()),
        coll,
        INT_WATCH,
    )


def test_delete_duplicate_ids_in_one_batch_is_rejected(client, coll) -> None:
    """A delete naming an id twice is InvalidArgument at ids[2] and deletes nothing."""
    assert_rejected(
        client,
        InvalidArgument,
        ("ids[2]",),
        lambda: client.delete(coll, ids=[0, 1, 0]),
        coll,
        INT_WATCH,
    )


@pytest.mark.parametrize("n_vectors", [3, 5])
def test_vectors_and_ids_count_mismatch_is_rejected(client, coll, n_vectors) -> None:
    """More or fewer vectors than ids is InvalidArgument naming vectors and ids."""
    vecs = good_rows(n_vectors)
    assert_rejected(
        client,
        InvalidArgument,
        ("vectors", "ids"),
        lambda: client.upsert(coll, ids=BATCH_IDS, vectors=vecs),
        coll,
        INT_WATCH,
    )


@pytest.mark.parametrize("n_payloads", [3, 5])
def test_payloads_count_mismatch_is_rejected(client, coll, n_payloads) -> None:
    """More or fewer payloads than ids is InvalidArgument naming payloads."""
    payloads = [{"p": i} for i in range(n_payloads)]
    assert_rejected(
        client,
        InvalidArgument,
        ("payloads",),
        lambda: client.upsert(coll, ids=BATCH_IDS, vectors=good_rows(), payloads=payloads),
        coll,
        INT_WATCH,
    )


def test_upsert_over_batch_cap_is_rejected(client, coll) -> None:
    """More points than config.MAX_BATCH in one request is InvalidArgument naming ids."""
    n = config.MAX_BATCH + 1
    ids = list(range(100, 100 + n))
    vecs = np.ones((n, DIM), np.float32)
    assert_rejected(
        client,
        InvalidArgument,
        ("ids",),
        lambda: client.upsert(coll, ids=ids, vectors=vecs),
        coll,
        [*INT_WATCH, 100, 100 + n - 1],
    )


def test_queries_over_cap_are_rejected(client, coll) -> None:
    """More queries than config.MAX_QUERIES in one search is InvalidArgument naming queries."""
    q = np.ones((config.MAX_QUERIES + 1, DIM), np.float32)
    assert_rejected(
        client,
        InvalidArgument,
        ("queries",),
        lambda: client.search(coll, q, k=1),
        coll,
        INT_WATCH,
    )


# -- int ids ------------------------------------------------------------------------------

BAD_INT_IDS = [-1, -(2**63), 2**63, 2**64, True, False, 1.0, "12", None]
BAD_INT_ID_NAMES = [
    "negative",
    "min-int64",
    "2**63",
    "2**64",
    "True",
    "False",
    "float",
    "str",
    "None",
]


@pytest.mark.parametrize("bad", BAD_INT_IDS, ids=BAD_INT_ID_NAMES)
def test_upsert_bad_int_id_is_rejected(client, coll, bad) -> None:
    """An int id out of [0, 2**63), a bool, float, str or None is InvalidArgument at ids[3]."""
    ids = [1, 10, 11, bad]
    assert_rejected(
        client,
        InvalidArgument,
        ("ids[3]",),
        lambda: client.upsert(coll, ids=ids, vectors=good_rows()),
        coll,
        INT_WATCH,
    )


@pytest.mark.parametrize("bad", BAD_INT_IDS, ids=BAD_INT_ID_NAMES)
def test_delete_bad_int_id_is_rejected_and_deletes_nothing(client, coll, bad) -> None:
    """A bad id at the end of a delete batch is InvalidArgument and the good ids survive."""
    assert_rejected(
        client,
        InvalidArgument,
        ("ids[2]",),
        lambda: client.delete(coll, ids=[0, 1, bad]),
        coll,
        INT_WATCH,
    )


@pytest.mark.parametrize("bad", [-1, 2**63, True, "x"], ids=["negative", "2**63", "True", "str"])
def test_get_bad_int_id_is_rejected(client, coll, bad) -> None:
    """get with a bad id is InvalidArgument at its position."""
    assert_rejected(
        client,
        InvalidArgument,
        ("ids[1]",),
        lambda: client.get(coll, ids=[0, bad]),
        coll,
        INT_WATCH,
    )


def test_numpy_uint64_id_above_int63_is_rejected(client, coll) -> None:
    """A numpy uint64 id >= 2**63 does not wrap around: InvalidArgument at ids[3]."""
    ids = np.array([1, 10, 11, 2**63], np.uint64)
    assert_rejected(
        client,
        InvalidArgument,
        ("ids[3]",),
        lambda: client.upsert(coll, ids=ids, vectors=good_rows()),
        coll,
        INT_WATCH,
    )


def test_ids_not_a_list_is_rejected(client, coll) -> None:
    """ids given as a single scalar or string is InvalidArgument naming ids."""
    for ids in (5, "5"):
        assert_rejected(
            client,
            InvalidArgument,
            ("ids",),
            lambda ids=ids: client.upsert(coll, ids=ids, vectors=good_rows(1)),
            coll,
            INT_WATCH,
        )


# -- str ids ------------------------------------------------------------------------------

BAD_STR_IDS = [
    "",
    "é" * 128 + "a",  # 257 UTF-8 bytes, 129 characters
    "x" * 257,
    "a\x00b",
    "a\nb",
    "\t",
    "a\x1fb",
    "a\x7fb",
    "\ud800",  # a lone surrogate is not encodable text
    5,
    b"bytes",
    None,
]
BAD_STR_ID_NAMES = [
    "empty",
    "257-bytes-multibyte",
    "257-ascii",
    "NUL",
    "newline",
    "tab",
    "unit-separator",
    "DEL",
    "lone-surrogate",
    "int",
    "bytes",
    "None",
]


@pytest.mark.parametrize("bad", BAD_STR_IDS, ids=BAD_STR_ID_NAMES)
def test_upsert_bad_str_id_is_rejected(client, scoll, bad) -> None:
    """An empty, over-256-byte, control-character or non-str id is InvalidArgument at ids[3]."""
    ids = [*BATCH_STR[:3], bad]
    assert_rejected(
        client,
        InvalidArgument,
        ("ids[3]",),
        lambda: client.upsert(scoll, ids=ids, vectors=good_rows()),
        scoll,
        STR_WATCH,
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a\x00b",
        "x" * 257,
        5,
    ],
    ids=["empty", "NUL", "long", "int"],
)
def test_delete_bad_str_id_is_rejected_and_deletes_nothing(client, scoll, bad) -> None:
    """A bad str id at the end of a delete batch is InvalidArgument; the good ids survive."""
    assert_rejected(
        client,
        InvalidArgument,
        ("ids[2]",),
        lambda: client.delete(scoll, ids=["a", "b", bad]),
        scoll,
        STR_WATCH,
    )


# -- payloads -----------------------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    """A payload whose dicts nest `depth` deep ({"a": 1} has depth 1)."""
    p: Any = 1
    for _ in range(depth):
        p = {"a": p}
    return p


def deep_list(depth: int) -> dict[str, Any]:
    p: Any = 0
    for _ in range(depth):
        p = [p]
    return {"a": p}


BAD_PAYLOADS = [
    {"s": {1, 2}},
    {"b": b"raw"},
    {"x": float("nan")},
    {"x": float("inf")},
    {"o": object()},
    {"big": "x" * (config.MAX_PAYLOAD_BYTES + 1)},
    nested(config.MAX_PAYLOAD_DEPTH + 1),
    deep_list(10_000),
    ["not", "a", "dict"],
    "a string",
]
BAD_PAYLOAD_NAMES = [
    "set",
    "bytes",
    "nan",
    "inf",
    "object",
    "over-size-cap",
    "over-depth-cap",
    "depth-10000",
    "list",
    "str",
]


@pytest.mark.parametrize("bad", BAD_PAYLOADS, ids=BAD_PAYLOAD_NAMES)
def test_upsert_bad_payload_is_rejected(client, coll, bad) -> None:
    """A payload that is not a JSON object within the caps is InvalidArgument at payloads[3]."""
    payloads = [{"ok": 1}, {"ok": 2}, None, bad]
    assert_rejected(
        client,
        InvalidArgument,
        ("payloads[3]",),
        lambda: client.upsert(coll, ids=BATCH_IDS, vectors=good_rows(), payloads=payloads),
        coll,
        INT_WATCH,
    )


def test_payload_at_the_caps_is_accepted(client, coll) -> None:
    """A payload nested exactly MAX_PAYLOAD_DEPTH deep, or just under the size cap, is stored."""
    deep = nested(config.MAX_PAYLOAD_DEPTH)
    big = {"big": "x" * (config.MAX_PAYLOAD_BYTES - 100)}
    client.upsert(coll, ids=[20, 21], vectors=good_rows(2), payloads=[deep, big])
    assert [r.payload for r in client.get(coll, ids=[20, 21])] == [deep, big]


# -- search arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "k",
    [0, -1, config.MAX_K + 1, 2.5, True, "3", None],
    ids=["0", "negative", "above-MAX_K", "float", "bool", "str", "None"],
)
def test_bad_k_is_rejected(client, coll, k) -> None:
    """k must be an int in [1, config.MAX_K]; anything else is InvalidArgument naming k."""
    assert_rejected(
        client,
        InvalidArgument,
        ("k",),
        lambda: client.search(coll, good_rows(1), k=k),
        coll,
        INT_WATCH,
    )


def test_k_at_max_is_accepted(client, coll) -> None:
    """k = config.MAX_K is valid; the 4 points come first, then padding."""
    res = client.search(coll, good_rows(1), k=config.MAX_K)
    assert res.ids.shape == (1, config.MAX_K)
    assert sorted(res.ids[0, :4].tolist()) == SEED_IDS
    assert np.all(res.ids[0, 4:] == -1)


@pytest.mark.parametrize(
    "flt",
    [
        {"x": {1, 2}},
        {"x": float("nan")},
        ["x"],
        {1: "x"},
    ],
    ids=["set-value", "nan-value", "list", "int-key"],
)
def test_bad_filter_is_rejected(client, coll, flt) -> None:
    """A filter that is not a JSON object keyed by field names is InvalidArgument naming filter."""
    assert_rejected(
        client,
        InvalidArgument,
        ("filter",),
        lambda: client.search(coll, good_rows(1), k=2, filter=flt),
        coll,
        INT_WATCH,
    )


# -- collections --------------------------------------------------------------------------

BAD_NAMES = [
    "../x",
    "a/b",
    "",
    "a\x00b",
    "x" * 65,
    "x\n",
    "a.b",
    " a",
    "héllo",
    None,
]
BAD_NAME_IDS = [
    "dotdot",
    "slash",
    "empty",
    "NUL",
    "65-chars",
    "trailing-newline",
    "dot",
    "space",
    "non-ascii",
    "None",
]
NAME_OPS: dict[str, Callable[[vecdb.Client, Any], object]] = {
    "create": lambda c, n: c.create_collection(n, dim=DIM, metric="l2"),
    "get_collection": lambda c, n: c.get_collection(n),
    "drop": lambda c, n: c.drop_collection(n),
    "upsert": lambda c, n: c.upsert(n, ids=[1], vectors=good_rows(1)),
    "search": lambda c, n: c.search(n, good_rows(1), k=1),
    "count": lambda c, n: c.count(n),
}


@pytest.mark.parametrize("op", list(NAME_OPS))
@pytest.mark.parametrize("name", BAD_NAMES, ids=BAD_NAME_IDS)
def test_bad_collection_name_is_rejected(client, coll, name, op) -> None:
    """A name outside [A-Za-z0-9_-]{1,64} is InvalidArgument naming the name, in every call."""
    assert_rejected(
        client, InvalidArgument, ("name",), lambda: NAME_OPS[op](client, name), coll, INT_WATCH
    )


def test_name_of_64_chars_is_accepted(client) -> None:
    """The longest valid name (64 characters of [A-Za-z0-9_-]) works."""
    name = "A-z_9" * 12 + "abcd"
    assert len(name) == 64
    client.create_collection(name, dim=DIM, metric="l2")
    assert client.get_collection(name).name == name


def test_unknown_collection_is_not_found(client, coll) -> None:
    """A well-formed name that does not exist is NotFound naming it, for reads and writes."""
    for call in (
        lambda: client.upsert("missing", ids=[1], vectors=good_rows(1)),
        lambda: client.search("missing", good_rows(1), k=1),
        lambda: client.delete("missing", ids=[1]),
    ):
        assert_rejected(client, NotFound, ("missing",), call, coll, INT_WATCH)


def test_create_existing_is_already_exists(client, coll) -> None:
    """Creating a name that exists is AlreadyExists naming it; the points are untouched."""
    assert_rejected(
        client,
        AlreadyExists,
        ("c",),
        lambda: client.create_collection(coll, dim=DIM, metric="cosine"),
        coll,
        INT_WATCH,
    )


@pytest.mark.parametrize(
    "dim",
    [0, -1, config.MAX_DIM + 1, 2.5, True, "4", None],
    ids=["0", "negative", "above-MAX_DIM", "float", "bool", "str", "None"],
)
def test_bad_dim_at_create_is_rejected(client, dim) -> None:
    """dim outside [1, MAX_DIM] or not an int is InvalidArgument naming dim; nothing created."""
    assert_rejected(
        client, InvalidArgument, ("dim",), lambda: client.create_collection("d", dim=dim)
    )
    assert client.create_collection("d", dim=3).dim == 3  # the name was not taken


def test_dim_bounds_are_accepted(client) -> None:
    """dim = 1 and dim = MAX_DIM are valid."""
    assert client.create_collection("one", dim=1, metric="l2").dim == 1
    assert client.create_collection("max", dim=config.MAX_DIM, metric="l2").dim == config.MAX_DIM


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"index": "hnsw"}, "index"),
        ({"index": ""}, "index"),
        ({"metric": "dot"}, "metric"),
        ({"id_type": "uuid"}, "id_type"),
        ({"kind": "sparse"}, "kind"),
        ({"index_params": ["nlist", 4]}, "index_params"),
    ],
    ids=["index-hnsw", "index-empty", "metric", "id_type", "kind", "index_params"],
)
def test_unknown_create_option_is_rejected(client, kwargs, field) -> None:
    """An unknown index, metric, id_type or kind is InvalidArgument naming it; nothing created."""
    args = {"dim": DIM, "metric": "l2", **kwargs}
    assert_rejected(
        client, InvalidArgument, (field,), lambda: client.create_collection("d", **args)
    )
    assert client.create_collection("d", dim=DIM).name == "d"


def test_client_keeps_serving_after_errors(client, coll) -> None:
    """After a run of rejected requests, ordinary requests still succeed."""
    for call in (
        lambda: client.upsert(coll, ids=[1], vectors=[[float("nan")] * DIM]),
        lambda: client.search(coll, good_rows(1), k=0),
        lambda: client.create_collection("../x", dim=DIM),
        lambda: client.get_collection("missing"),
    ):
        with pytest.raises(vecdb.VecdbError):
            call()
    assert client.upsert(coll, ids=[50], vectors=good_rows(1)) == 1
    assert client.count(coll) == 5
    assert client.search(coll, good_rows(1), k=1).ids.shape == (1, 1)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_vector_whose_norm_overflows_float32_is_rejected(client, metric) -> None:
    """A vector of finite components whose squared norm overflows float32 is InvalidArgument."""
    dim = 512  # 512 * (1e18)**2 = 5.1e38 > float32 max 3.4e38
    client.create_collection("big", dim=dim, metric=metric, index="flat")
    client.upsert("big", ids=[0], vectors=np.ones((1, dim), np.float32))
    vecs = np.ones((4, dim))
    vecs[3] = 1e18
    assert_rejected(
        client,
        InvalidArgument,
        ("vectors[3]",),
        lambda: client.upsert("big", ids=BATCH_IDS, vectors=vecs),
        "big",
        [0, *BATCH_IDS],
    )
    q = np.ones((2, dim))
    q[1] = 1e18
    assert_rejected(
        client, InvalidArgument, ("queries[1]",), lambda: client.search("big", q, k=1), "big", [0]
    )


@pytest.mark.parametrize(
    "params",
    [{"nprobe": -1}, {"max_postings": 0}, ["nprobe", 4]],
    ids=["negative", "zero", "not-a-dict"],
)
def test_bad_search_params_are_rejected(client, coll, params) -> None:
    """Search params the index cannot take (the flat index takes none) are InvalidArgument."""
    assert_rejected(
        client,
        InvalidArgument,
        ("params",),
        lambda: client.search(coll, good_rows(1), k=2, params=params),
        coll,
        INT_WATCH,
    )
