"""Option types shared by the bench tools' command lines: an integer with a lower bound whose
error names the option's rule and the text given (argparse's own says "invalid int value")."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type` accepting integers >= `minimum`."""
    rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value

    return parse
