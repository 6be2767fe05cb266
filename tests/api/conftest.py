"""Fixtures of the API tests: `trio` (an embedded, a remote and an async remote client, each
over a database of its own, one per module) and `index` (the default SPANN index or flat)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_modes import Trio
from day_one_data import INDEXES


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    t = Trio(tmp_path_factory.mktemp("congruence"))
    yield t
    t.close()


@pytest.fixture(params=INDEXES)
def index(request: pytest.FixtureRequest) -> str:
    """The index kind: the default (SPANN, built by optimize) or flat."""
    return str(request.param)
