"""`vecdb.connect` and `vecdb.AsyncClient` refuse a port outside 1..65535 instead of letting
gRPC dial some other port ("localhost:99999" reached port 34463, 99999 mod 65536)."""

from __future__ import annotations

import pytest

import vecdb


@pytest.mark.parametrize(
    "target", ["localhost:99999", "127.0.0.1:0", "grpc://localhost:65536", "https://h:70000/"]
)
def test_a_port_out_of_range_is_invalid_argument(target: str) -> None:
    """The error names the target and the port's range, with field "target"."""
    with pytest.raises(vecdb.InvalidArgument, match=r"out of range \[1, 65535\]") as info:
        vecdb.connect(target)
    assert info.value.field == "target"
    with pytest.raises(vecdb.InvalidArgument, match="out of range"):
        vecdb.AsyncClient(target)


@pytest.mark.parametrize("target", ["localhost:1", "localhost:65535", "grpc://[::1]:7700"])
def test_ports_at_the_bounds_are_accepted(target: str) -> None:
    """1 and 65535 are ports; connecting is lazy, so no server is needed."""
    vecdb.connect(target).close()
