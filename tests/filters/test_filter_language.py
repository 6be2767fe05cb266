"""The filter language alone: the compiled filter agrees with the brute-force evaluator of
`oracles.matches` on generated filters and payloads, and every malformed filter is an
`InvalidArgument` that names the path of its bad part."""

from __future__ import annotations

import pytest
import strategies as gen
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import matches

from vecdb.engine import filters
from vecdb.errors import InvalidArgument


@settings(max_examples=600, deadline=None)
@given(flt=gen.rich_filters(), payloads=st.lists(gen.rich_payloads(), min_size=1, max_size=8))
def test_compiled_filter_agrees_with_brute_force(flt, payloads) -> None:
    """parse(f).matches(p) equals the oracle's evaluation for every generated (f, p)."""
    compiled = filters.parse(flt)
    assert compiled is not None
    for p in payloads:
        assert compiled.matches(p) == matches(p, flt), (flt, p)


@pytest.mark.parametrize(
    ("payload", "flt", "want"),
    [
        ({"n": 1}, {"n": 1.0}, True),  # one JSON number
        ({"n": True}, {"n": 1}, False),  # true is not 1
        ({"n": 1}, {"n": True}, False),
        ({"n": None}, {"n": None}, True),  # null equals null ...
        ({}, {"n": None}, False),  # ... not a missing field
        ({}, {"n": {"$ne": 3}}, True),  # a missing field is "not equal"
        ({}, {"n": {"$nin": [3]}}, True),
        ({}, {"n": {"$gt": 0}}, False),
        ({"n": "5"}, {"n": {"$gt": 1}}, False),  # strings and numbers do not compare
        ({"n": "b"}, {"n": {"$gt": "a"}}, True),
        ({"n": [1, 2]}, {"n": 1}, False),  # a list is not its elements
        ({"a": {"b": {"c": 3}}}, {"a.b.c": {"$gte": 3}}, True),
        ({"a": {"b": 3}}, {"a.b.c": {"$exists": False}}, True),
        ({"n": None}, {"n": {"$exists": True}}, True),
        (None, {"$not": {"n": 1}}, True),  # no payload is an empty object
        (None, {}, True),
        ({"x": 1, "y": 2}, {"x": 1, "y": 3}, False),  # several keys are AND
        ({"x": 1}, {"$or": [{"x": 2}, {"x": {"$in": [0, 1]}}]}, True),
        ({"s": "é"}, {"s": {"$gt": "z"}}, True),  # code point order (é > z)
    ],
)
def test_semantics_of_documented_cases(payload, flt, want) -> None:
    """The cases docs/FILTERS.md spells out; the oracle agrees on each."""
    compiled = filters.parse(flt)
    assert compiled is not None
    assert compiled.matches(payload) is want
    assert matches(payload, flt) is want


BAD = [
    ([1], "filter: expected an object of field -> condition, got array"),
    ("year", "filter: expected an object of field -> condition, got string"),
    ({"year": {"$gte": [1]}}, "filter.year.$gte: expected a number or string, got array"),
    ({"year": {"$gte": True}}, "filter.year.$gte: expected a number or string, got boolean"),
    ({"year": {"$gte": None}}, "filter.year.$gte: expected a number or string, got null"),
    ({"year": {"$foo": 1}}, "filter.year.$foo: unknown operator '$foo'"),
    ({"$foo": []}, "filter.$foo: unknown operator '$foo'"),
    ({"year": {"$in": 3}}, "filter.year.$in: expected an array of values, got number"),
    ({"year": {"$in": [1, [2]]}}, "filter.year.$in[1]: expected a single value, got an array"),
    ({"year": {"$exists": 1}}, "filter.year.$exists: expected true or false, got number"),
    ({"$and": {}}, "filter.$and: expected an array of filters, got object"),
    ({"$or": []}, "filter.$or: expected at least one filter"),
    ({"$and": [{"a": 1}, 3]}, "filter.$and[1]: expected an object"),
    ({"$not": [1]}, "filter.$not: expected an object"),
    ({"year": [1, 2]}, "filter.year: expected a single value, got an array (use $in"),
    ({"year": {"a": 1}}, "filter.year: 'a' is not an operator"),
    ({"year": {}}, "filter.year: expected a value or an object of operators"),
    ({"a..b": 1}, "filter.a..b: a field path needs non-empty names"),
    ({"year": float("nan")}, "filter.year: expected a finite number"),
    ({"year": {"$eq": "\ud800"}}, "filter.year.$eq: is not valid Unicode text"),
    ({"year": {"$eq": {1, 2}}}, "filter.year.$eq: expected a string, number, boolean or null"),
    ({1: 2}, "filter: keys must be strings"),
    ({"$not": {"$not": {"year": {"$lt": {}}}}}, "filter.$not.$not.year.$lt: expected a number"),
]


@pytest.mark.parametrize(("flt", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_filter_names_the_path(flt, message) -> None:
    """Each malformed filter raises InvalidArgument whose message starts with the path, and
    whose field is that path (reason BAD_FILTER)."""
    with pytest.raises(InvalidArgument) as err:
        filters.parse(flt)
    assert str(err.value).startswith(message), str(err.value)
    assert err.value.field == message.split(":")[0] and err.value.reason == "BAD_FILTER"


def test_too_deep_and_too_large_filters_are_refused() -> None:
    """Nesting past MAX_FILTER_DEPTH and more than MAX_FILTER_CONDITIONS conditions."""
    deep: dict = {"x": 1}
    for _ in range(filters.MAX_FILTER_DEPTH + 1):
        deep = {"$not": deep}
    with pytest.raises(InvalidArgument, match="nested deeper than"):
        filters.parse(deep)
    wide = {"$or": [{"x": i} for i in range(filters.MAX_FILTER_CONDITIONS + 1)]}
    with pytest.raises(InvalidArgument, match="more than"):
        filters.parse(wide)
    assert filters.parse(None) is None
