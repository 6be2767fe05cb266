"""Server settings are validated when loaded, naming the offending setting."""

from __future__ import annotations

import pytest

from vecdb.errors import InvalidArgument
from vecdb.server.config import load_config


def test_unknown_log_level_is_rejected_naming_the_setting() -> None:
    """VECDB__LOG__LEVEL=bogus fails at load with log.level in the message, not at start-up."""
    with pytest.raises(InvalidArgument, match="log.level"):
        load_config(env={"VECDB__LOG__LEVEL": "bogus"})
    assert load_config(env={"VECDB__LOG__LEVEL": "debug"}).log.level.upper() == "DEBUG"
