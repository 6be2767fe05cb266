"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def pipeline_on_few_tokens(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Trained document searches go through the coded pipeline even when the documents they
    see hold few tokens: by default a search over at most `EXACT_TOKENS` raw tokens scores
    them all exactly, and the tests that exercise the pipeline use corpora that small."""
    from vecdb.index.multivector import search

    monkeypatch.setattr(search, "EXACT_TOKENS", 0)
    yield
