"""Hypothesis strategies shared by the test packages: ids, vectors, payloads, filters, batches.

Owns the shapes of generated requests, all valid by API.md's rules (ids unique within a
batch, str ids non-empty without control characters and at most 256 UTF-8 bytes, finite
vectors, JSON payloads). Vectors have small-integer coordinates so that exact distance ties
are common (the tie-aware checks of `oracles` must accept either tied point) and distances
are exact in float32 and float16 (`oracles.INTEGER`). Payloads carry a `tag` from a small set
that mixes look-alike JSON values (1, 1.0, true, "1", null), so filters match often and must
tell them apart. Constructors are cached (one strategy object per arguments), so a state
machine that asks for a strategy at every step does not make hypothesis analyse it again.
No tests here.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# Values of the `tag` payload field: 1 and 1.0 are one JSON number, true and "1" are not.
TAGS: tuple[Any, ...] = (0, 1, 1.0, True, "1", "red", None)
# Values a filter on `tag` looks for (1.0 is left out: it selects what 1 selects).
FILTER_TAGS: tuple[Any, ...] = (0, 1, True, "1", "red", None, "absent")
MAX_STR_ID_BYTES = 256  # API.md


@functools.cache
def int_ids(max_id: int = 2**63 - 1) -> st.SearchStrategy[int]:
    """Valid int ids (0 .. max_id); a small `max_id` makes replacements and deletes of
    existing points common."""
    return st.integers(0, max_id)


@functools.cache
def str_ids(max_chars: int = 12) -> st.SearchStrategy[str]:
    """Valid str ids: any non-control, non-surrogate characters (non-ASCII included), at most
    256 UTF-8 bytes."""
    chars = st.characters(exclude_categories=("Cc", "Cs"))
    return st.text(chars, min_size=1, max_size=max_chars).filter(
        lambda s: len(s.encode("utf-8")) <= MAX_STR_ID_BYTES
    )


@functools.cache
def id_lists(
    ids: st.SearchStrategy[Any], min_size: int = 1, max_size: int = 8
) -> st.SearchStrategy[list[Any]]:
    """A request's ids: unique, as vecdb requires within one batch."""
    return st.lists(ids, min_size=min_size, max_size=max_size, unique=True)


@functools.cache
def vectors(
    n: int, dim: int, lo: int = -3, hi: int = 3, nonzero: bool = False
) -> st.SearchStrategy[np.ndarray]:
    """(n, dim) float32 with integer coordinates in [lo, hi]; `nonzero` leaves out the zero
    vector (which has no cosine)."""
    rows = hnp.arrays(np.int8, (n, dim), elements=st.integers(lo, hi))
    if nonzero:
        rows = rows.filter(lambda a: bool(np.all(np.any(a != 0, axis=1))))
    return rows.map(lambda a: a.astype(np.float32))


def seeded_vectors(
    n: int, dim: int, seed: int | list[int], lo: int = -3, hi: int = 3
) -> np.ndarray:
    """The same kind of rows drawn by numpy from a seed: cheap for wide vectors, where a
    hypothesis array would cost more to generate and shrink than the step it feeds. A list
    seed ([seed, salt]) gives a stream that no int seed reproduces."""
    rng = np.random.default_rng(seed)
    return rng.integers(lo, hi + 1, size=(n, dim)).astype(np.float32)


QUERY_SALT = 0x5EED  # first word of every query stream: no stored-row seed starts with it


def query_vectors(n: int, dim: int, seed: int, lo: int = -3, hi: int = 3) -> np.ndarray:
    """Query rows from a stream of their own ([QUERY_SALT, seed]), so they never repeat a
    stored row drawn by `seeded_vectors` with another seed (numpy treats 5, [5] and [5, 0] as
    one seed), and exact-tie cases stay deliberate (a query equal to a stored vector, a
    head, is covered by test_spann_reading_every_posting_is_exact_for_a_query_on_a_head)."""
    return seeded_vectors(n, dim, [QUERY_SALT, seed], lo, hi)


@functools.cache
def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**31 - 1)


@functools.cache
def _json_scalars() -> st.SearchStrategy[Any]:
    return (
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
    )


@functools.cache
def json_values(max_leaves: int = 4) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars, lists and objects, shallowly nested."""
    return st.recursive(
        _json_scalars(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                    max_size=3),
        max_leaves=max_leaves,
    )  # fmt: skip


@functools.cache
def payloads() -> st.SearchStrategy[dict[str, Any] | None]:
    """None, or an object that usually has a `tag` (from TAGS) and may hold other JSON."""
    tagged = st.fixed_dictionaries(
        {"tag": st.sampled_from(TAGS)},
        optional={"n": st.integers(-5, 5), "extra": json_values()},
    )
    untagged = st.dictionaries(st.sampled_from(["n", "extra", "other"]), json_values(), max_size=2)
    return st.none() | tagged | untagged


@functools.cache
def filters() -> st.SearchStrategy[dict[str, Any] | None]:
    """No filter, or an equality filter on `tag` (sometimes with `n` too)."""
    one = st.fixed_dictionaries({"tag": st.sampled_from(FILTER_TAGS)})
    two = st.fixed_dictionaries({"tag": st.sampled_from(FILTER_TAGS), "n": st.integers(-5, 5)})
    return st.none() | one | two


# The filter language (docs/FILTERS.md) over `rich_payloads`: fields, their look-alike values.
RICH_FIELDS = ("year", "tag", "score", "flag", "meta.x", "meta.y.z", "nope")
RICH_VALUES: tuple[Any, ...] = (
    0, 1, 1.0, 2, 2.5, -3, 2**60, 2**60 + 1, True, False, None, "", "1", "a", "ab", "b", "é",
    "a\x00b",
)  # fmt: skip


@functools.cache
def rich_payloads() -> st.SearchStrategy[dict[str, Any] | None]:
    """Payloads whose fields (some nested: meta.x, meta.y.z) take look-alike values of every
    JSON type, sometimes a list or an object, sometimes missing."""
    scalar = st.sampled_from(RICH_VALUES)
    value = scalar | st.lists(scalar, max_size=2) | st.dictionaries(st.sampled_from(["z"]), scalar)
    inner = st.fixed_dictionaries({}, optional={"z": value})
    meta = st.fixed_dictionaries({}, optional={"x": value, "y": inner | value})
    doc = st.fixed_dictionaries(
        {}, optional={"year": value, "tag": value, "score": value, "flag": value, "meta": meta}
    )
    return st.none() | doc


@functools.cache
def filter_conditions() -> st.SearchStrategy[Any]:
    """What a field of a filter maps to: a scalar (equality) or an object of operators."""
    scalar = st.sampled_from(RICH_VALUES)
    ordered = st.sampled_from([v for v in RICH_VALUES if type(v) in (int, float, str)])
    one_op = st.one_of(
        st.tuples(st.sampled_from(["$eq", "$ne"]), scalar),
        st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), ordered),
        st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(scalar, max_size=3)),
        st.tuples(st.just("$exists"), st.booleans()),
    )
    return scalar | st.lists(one_op, min_size=1, max_size=2).map(dict)


@functools.cache
def rich_filters(max_leaves: int = 6) -> st.SearchStrategy[dict[str, Any]]:
    """Valid filters of the whole language: conditions on RICH_FIELDS combined by implicit
    AND, $and, $or and $not, nested."""
    leaf = st.dictionaries(st.sampled_from(RICH_FIELDS), filter_conditions(), min_size=1,
                           max_size=2)  # fmt: skip
    return st.recursive(
        leaf,
        lambda inner: (
            st.fixed_dictionaries({"$and": st.lists(inner, min_size=1, max_size=3)})
            | st.fixed_dictionaries({"$or": st.lists(inner, min_size=1, max_size=3)})
            | st.fixed_dictionaries({"$not": inner})
        ),
        max_leaves=max_leaves,
    )


@dataclass(frozen=True)
class Batch:
    """One upsert request: ids, (n, dim) float32 vectors and payloads, aligned."""

    ids: list[Any]
    vectors: np.ndarray
    payloads: list[dict[str, Any] | None]


@st.composite
def batches(
    draw: st.DrawFn,
    dim: int,
    ids: st.SearchStrategy[Any] | None = None,
    max_size: int = 8,
    nonzero: bool = False,
) -> Batch:
    """An upsert batch of 1..max_size points with unique ids (int ids 0..40 by default, so
    batches overlap and replace each other)."""
    got = draw(id_lists(int_ids(40) if ids is None else ids, 1, max_size))
    vecs = draw(vectors(len(got), dim, nonzero=nonzero))
    pays = draw(st.lists(payloads(), min_size=len(got), max_size=len(got)))
    return Batch(got, vecs, pays)


def machine_examples(default: int) -> int:
    """A state machine's example budget: `default` (sized for CI), or VECDB_MACHINE_EXAMPLES
    for a deeper local hunt."""
    return int(os.environ.get("VECDB_MACHINE_EXAMPLES", default))


def machine_settings(max_examples: int, steps: int) -> settings:
    """Settings of a state machine over a real database: no deadline (a step may open
    RocksDB or train), slow examples and large data accepted."""
    return settings(
        max_examples=machine_examples(max_examples),
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
