"""The test etcd itself: a port taken between lookup and bind does not hand a test someone
else's etcd."""

from __future__ import annotations

import socket
from pathlib import Path

import etcd3
from etcd_proc import EtcdProcess


def test_a_first_start_whose_client_port_is_taken_moves_to_fresh_ports(
    etcd_server: EtcdProcess, tmp_path: Path
) -> None:
    """Another etcd answers on the port picked: the new one is not fooled by its answer, takes
    fresh ports and serves as itself, so `.pid` is the etcd that `.endpoint` reaches (what the
    SIGSTOP tests rely on)."""
    other = EtcdProcess(tmp_path / "data")
    other.client_port = etcd_server.client_port
    other.endpoint = etcd_server.endpoint
    try:
        other.start()
        assert other.running
        assert other.client_port != etcd_server.client_port
        client = etcd3.client("127.0.0.1", other.client_port, timeout=1)
        try:
            assert [m.name for m in client.members] == [other.name]
        finally:
            client.close()
        assert other.name != etcd_server.name
    finally:
        other.stop()
    assert not other.running
    assert etcd_server.running


def test_a_first_start_whose_port_is_bound_by_anything_moves_to_fresh_ports(
    tmp_path: Path,
) -> None:
    """A plain socket holds the client port: etcd exits on its bind error, and the start
    tries fresh ports instead of failing the test run."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        proc = EtcdProcess(tmp_path / "data")
        proc.client_port, proc.endpoint = taken, f"127.0.0.1:{taken}"
        try:
            proc.start()
            assert proc.running and proc.client_port != taken
            assert "address already in use" in proc.log_tail(100)
        finally:
            proc.stop()
