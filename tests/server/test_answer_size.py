"""The server's measures of an answer before it runs and before it is sent
(`vecdb.server.answer_size`), against the rules they state."""

from __future__ import annotations

import pytest
from google.protobuf.message import EncodeError

from vecdb import config
from vecdb.errors import ResourceExhausted
from vecdb.server.answer_size import Fit, hits_too_large

LIMIT = 1 << 20


def test_hits_too_large_counts_the_least_bytes_of_every_hit() -> None:
    """nq x k x 5 bytes (plus the vectors asked for) against the limit: at the line it may
    fit, one query past it it cannot."""
    k = 1000
    fits = LIMIT // (k * config.MIN_HIT_BYTES)
    assert hits_too_large("Search", fits, k, 0, LIMIT) is None
    err = hits_too_large("Search", fits + 1, k, 0, LIMIT)
    assert err is not None and (err.reason, err.field) == ("ANSWER_TOO_LARGE", "k")
    assert f"{(fits + 1) * k:,} hits" in err.message and "1,048,576 bytes" in err.message
    assert hits_too_large("Search", 2, k, 4 * 128, LIMIT) is None  # 1,034,000 bytes
    assert hits_too_large("Search", 3, k, 4 * 128, LIMIT) is not None


def test_hits_too_large_leaves_bad_k_and_query_counts_to_the_engine() -> None:
    """A k or query count the engine refuses gets the engine's own error, not this one."""
    assert hits_too_large("Search", 2, config.MAX_K + 1, 0, LIMIT) is None
    assert hits_too_large("Search", 2, 0, 0, LIMIT) is None
    assert hits_too_large("Search", config.MAX_QUERIES + 1, 10, 0, LIMIT) is None


def test_an_answer_protobuf_cannot_encode_is_answer_too_large() -> None:
    """An answer over protobuf's 2 GiB (which raises EncodeError, before: INTERNAL) is
    refused like any answer over the limit."""

    def serialize(answer: object) -> bytes:
        raise EncodeError("Failed to serialize proto")

    with pytest.raises(ResourceExhausted) as info:
        Fit("Get", serialize, LIMIT)(object())
    assert (info.value.reason, info.value.field) == ("ANSWER_TOO_LARGE", "ids")
    assert "over 2 GiB" in info.value.message
    assert Fit("Get", lambda a: b"x" * 10, LIMIT)(object()) == b"x" * 10
