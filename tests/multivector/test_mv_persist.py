"""Format versions of the multi-vector state file: a version-1 state (per-dimension bucket
`values` and `cuts` where version 2 holds byte codebooks) still opens, with its grid as the
codebooks; a version-2 state opens as version 3 does; wider residual rows (version 3's
`residual_bytes`) survive a reopen; a version from a newer build is a FormatError naming the
file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from oracles import clustered_documents, clustered_queries

from vecdb.errors import FormatError
from vecdb.index.multivector import MultiVectorIndex
from vecdb.index.multivector.persist import STATE_MAGIC, STATE_VERSION
from vecdb.index.spann.framing import read_sections, write_sections
from vecdb.kernels.bitpack import grid_books

DIM = 32


def _rewrite(state: Path, version: int, change: Any) -> None:
    """Rewrite `state` at `version` with `change(arrays, meta)` applied to its arrays."""
    sections = read_sections(state, STATE_MAGIC, (1, 2, 3, 4))
    meta = json.loads(sections[0])
    arrays = {
        name: np.frombuffer(body, np.dtype(dtype)).reshape(shape)
        for (name, dtype, shape), body in zip(meta["arrays"], sections[1:], strict=True)
    }
    change(arrays, meta)
    meta["arrays"] = [[n, a.dtype.str, list(a.shape)] for n, a in arrays.items()]
    body = [np.ascontiguousarray(a).tobytes() for a in arrays.values()]
    write_sections(state, STATE_MAGIC, version, [json.dumps(meta).encode(), *body])


def _index(d: Path) -> tuple[MultiVectorIndex, list[np.ndarray]]:
    docs = clustered_documents(400, DIM, seed=5)
    idx = MultiVectorIndex(DIM, d, params={"K": 64})
    tokens = np.concatenate(docs)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in docs])]).astype(np.int64)
    idx.build(np.arange(len(docs)), tokens, offsets)
    assert idx.stats()["generation"] == 1
    idx.checkpoint(7)
    idx.close()
    return idx, clustered_queries(docs, 10, m=8, seed=6)


def test_a_version_1_state_opens_with_its_grid_as_codebooks(tmp_path: Path) -> None:
    """The same state written as version 1 (cuts + values) and as version 2 (the books of
    that grid) opens to the same index: same documents, same answers."""
    _, qs = _index(tmp_path)
    state = next(tmp_path.glob("state.*.bin"))
    meta = json.loads(read_sections(state, STATE_MAGIC, STATE_VERSION)[0])
    b = int(meta["codec"]["residual_bits"])
    assert b > 0
    rng = np.random.default_rng(0)
    values = np.sort(rng.standard_normal((DIM, 1 << b)).astype(np.float32) * 0.05, axis=1)
    cuts = ((values[:, 1:] + values[:, :-1]) / 2).astype(np.float32)

    def as_v1(arrays: dict[str, Any], _: dict[str, Any]) -> None:
        del arrays["books"]
        arrays["cuts"], arrays["values"] = cuts, values

    def as_v2(arrays: dict[str, Any], _: dict[str, Any]) -> None:
        arrays["books"] = grid_books(values, b)

    _rewrite(state, 2, as_v2)
    v2 = MultiVectorIndex(DIM, tmp_path)
    want, n = v2.search(qs, 10), len(v2)
    v2.close()
    state = next(tmp_path.glob("state.*.bin"))
    _rewrite(state, 1, as_v1)
    v1 = MultiVectorIndex(DIM, tmp_path)
    assert len(v1) == n and v1.stats()["generation"] == 1
    got = v1.search(qs, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1])
    v1.close()


def test_a_state_of_a_newer_version_is_a_format_error_naming_it(tmp_path: Path) -> None:
    _index(tmp_path)
    state = next(tmp_path.glob("state.*.bin"))
    _rewrite(state, 5, lambda arrays, meta: None)
    with pytest.raises(FormatError, match=rf"{state.name}.*version 5.*supports 1 or 2 or 3 or 4"):
        MultiVectorIndex(DIM, tmp_path)


def test_a_version_2_state_opens_as_version_3(tmp_path: Path) -> None:
    """Version 3 only adds wider codebooks: the same state stamped 2 gives the same answers."""
    _, qs = _index(tmp_path)
    idx = MultiVectorIndex(DIM, tmp_path)
    want = idx.search(qs, 10)
    idx.close()
    state = next(tmp_path.glob("state.*.bin"))
    _rewrite(state, 2, lambda arrays, meta: None)
    old = MultiVectorIndex(DIM, tmp_path)
    got = old.search(qs, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1])
    old.close()


def _built(tmp_path: Path, seed: int, params: dict[str, Any]) -> tuple[list[Any], MultiVectorIndex]:
    """300 clustered documents and an index built over them with `params`."""
    docs = clustered_documents(300, DIM, seed=seed)
    idx = MultiVectorIndex(DIM, tmp_path, params=params)
    tokens = np.concatenate(docs)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in docs])]).astype(np.int64)
    idx.build(np.arange(len(docs)), tokens, offsets)
    return docs, idx


def test_wider_residual_rows_survive_a_reopen(tmp_path: Path) -> None:
    """residual_bytes = 11 at d = 32 (natural 8): rows of 11 bytes, books of 11 positions, the
    same answers after a checkpoint and reopen."""
    docs, idx = _built(tmp_path, 7, {"K": 32, "residual_bytes": 11})
    assert idx.stats()["bytes_per_token"]["residuals"] == 11.0
    qs = clustered_queries(docs, 8, m=6, seed=8)
    want = idx.search(qs, 10)
    idx.checkpoint(3)
    idx.close()
    again = MultiVectorIndex(DIM, tmp_path)
    assert again.stats()["bytes_per_token"]["residuals"] == 11.0
    got = again.search(qs, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1])
    again.close()


def test_an_additive_codec_survives_a_reopen(tmp_path: Path) -> None:
    """residual_codec = "rq" (version 4): full-dimensional codebooks, marked additive in the
    state, the same answers after a checkpoint and reopen; a version-3 state is never additive."""
    docs, idx = _built(tmp_path, 9, {"K": 32, "residual_codec": "rq"})
    assert idx.stats()["bytes_per_token"]["residuals"] == 8.0
    qs = clustered_queries(docs, 8, m=6, seed=10)
    want = idx.search(qs, 10)
    idx.checkpoint(3)
    idx.close()
    state = next(tmp_path.glob("state.*.bin"))
    meta = json.loads(read_sections(state, STATE_MAGIC, STATE_VERSION)[0])
    assert meta["codec"]["additive"] is True
    assert dict((n, s) for n, _, s in meta["arrays"])["books"] == [8, 256, DIM]
    again = MultiVectorIndex(DIM, tmp_path)
    assert again.params.residual_codec == "rq"
    got = again.search(qs, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1])
    again.close()


def test_a_row_append_finishes_a_short_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pwrite may write fewer bytes than asked (Linux stops at ~2 GiB a call): `append`
    writes the rest, so the rows read back are the rows appended (a 5 GB append once
    counted rows it had not written, and the next mapping failed)."""
    import vecdb.index.multivector.rowfile as rf

    real = rf.os.pwrite
    calls = []

    def short(fd: int, data: Any, at: int) -> int:  # writes at most 1,000 bytes a call
        calls.append(len(data))
        return real(fd, bytes(data[:1000]), at)

    monkeypatch.setattr(rf.os, "pwrite", short)
    rows = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    f = rf.RowFile(tmp_path / "raw.rows", np.float32, 16, 0)
    calls.clear()
    assert f.append(rows[:100]) == 0 and f.append(rows[100:]) == 100
    assert len(calls) == 7 + 13  # 6,400 and 12,800 bytes in 1,000-byte pieces
    np.testing.assert_array_equal(f.rows(0, 300), rows)
    monkeypatch.setattr(rf, "WRITE_BYTES", 64)  # and asked in pieces
    f.append(rows[:10])
    np.testing.assert_array_equal(f.rows(300, 310), rows[:10])
    f.close()
