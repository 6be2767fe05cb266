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


def test_a_fractional_integer_setting_is_refused_not_truncated() -> None:
    """`max_k = 1.5` (a quota) or `workers = 2.5` are refused naming the setting; before,
    they became 1 and 2 silently (a tenant's own override of the same quota was refused)."""
    for section, key in (("quotas", "max_k"), ("server", "workers")):
        with pytest.raises(InvalidArgument, match=f"{section}.{key}=.*is not a valid int"):
            load_config(env={}, overrides={section: {key: 1.5}})
    assert load_config(env={}, overrides={"server": {"workers": 4.0}}).server.workers == 4
