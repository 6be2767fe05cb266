"""The multi-vector index's files: manifest, state, and the row files it names.

The directory holds `MANIFEST` (framed JSON behind a magic + version header: applied sequence,
the names of the current state / raw / tier files and their durable row counts), one
`state.<n>.bin` (framed sections: a JSON description, then every array of the document
table, the codec of generation g — centroids, residual byte codebooks (a version-1 state, written
before them, holds per-dimension bucket values, read as their grid; version 3 allows codebooks
wider than ceil(d b / 8) bytes, which version 2 never held; version 4 may hold residual-quantiser
codebooks, (P, 256, d), marked `additive`), int8 scales, IDF — the packed
codes, residual and sign rows and the IVF, as raw little-endian bytes) and the append-only
`raw.<n>.bin` / `tier.<n>.bin` row files (`rowfile`). A checkpoint syncs the row files, writes a
new state file, then switches the manifest (published by rename), so a crash leaves the
previous checkpoint whole; files the manifest does not name are deleted on open and after each
checkpoint. Never pickle.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.multivector.codec import ASSIGN_PROBE, Codec
from vecdb.index.multivector.params import MVBuildParams
from vecdb.index.multivector.rowfile import RowFile
from vecdb.index.multivector.view import View
from vecdb.index.spann.framing import read_sections, read_versioned, write_sections
from vecdb.index.spann.killpoints import kill_point
from vecdb.kernels.bitpack import CODE_PAD, grid_books

if TYPE_CHECKING:
    from vecdb.index.multivector.index import MultiVectorIndex

MANIFEST = "MANIFEST"
MANIFEST_MAGIC, MANIFEST_VERSION = b"VDBMVMAN", 1
STATE_MAGIC, STATE_VERSION = b"VDBMVSTA", 4
# 1: per-dimension bucket `values` (read as their grid) for `books`; 2: byte codebooks of the
# natural width only; 3: residual rows may be wider (`residual_bytes`: the dimensions split
# evenly over the bytes, `vecdb.kernels.bitpack.book_slots`), read as 2 otherwise; 4: the codec
# may be additive (`residual_codec="rq"`, full-d codebooks), versions 1-3 never are.
STATE_READS = (1, 2, 3, 4)
OURS = re.compile(r"^(state|raw|tier)\.\d+\.bin(\.tmp)?$|^MANIFEST\.tmp$")

VIEW_ARRAYS = (
    "slots", "raw_off", "alive", "enc_off", "codes", "residuals", "signs",
    "indptr", "cell_docs", "delta_cells", "delta_docs",
)  # fmt: skip
CODEC_ARRAYS = ("centroids", "books", "scales", "idf")


@dataclass
class Files:
    """Names of an index's files."""

    counter: int = 0  # the next file number
    retired: list[Any] = field(default_factory=list)  # row stores to delete after a checkpoint


def _next(index: MultiVectorIndex, kind: str) -> Path:
    assert index.directory is not None
    index._files.counter += 1
    return index.directory / f"{kind}.{index._files.counter}.bin"


def new_rows(index: MultiVectorIndex, kind: str, dtype: npt.DTypeLike, cols: int) -> RowFile:
    """A fresh, empty row file with the next number."""
    path = _next(index, kind)
    path.unlink(missing_ok=True)
    return RowFile(path, dtype, cols, 0)


def retire(index: MultiVectorIndex, old: View, raw: bool = True) -> None:
    """Remember the row stores of a replaced view (its raw store only if `raw`: a training
    may keep it), whose files are deleted once a checkpoint no longer names them. They are not closed then: a search that took the old view before
    the swap reads them to its end; their mappings and descriptors go with the last view
    that holds them (`RowFile` closes its descriptor when collected)."""
    for store in (old.raw, old.tier) if raw else (old.tier,):
        if isinstance(store, RowFile):
            index._files.retired.append(store)


def save(index: MultiVectorIndex, directory: Path) -> None:
    """Checkpoint: sync the row files, write the state, switch the manifest, clean up."""
    v = index._v
    v.raw.sync()
    if v.tier is not None:
        v.tier.sync()
    arrays: dict[str, npt.NDArray[Any]] = {n: getattr(v, n) for n in VIEW_ARRAYS}
    # the used part of the arrays that grow with spare room (see view.grow)
    n_enc = v.encoded_tokens
    arrays["codes"] = v.codes[: (n_enc * v.bits + 7) // 8 + CODE_PAD]
    arrays["residuals"] = v.residuals[:n_enc]
    arrays["signs"] = v.signs[:n_enc]
    arrays["weights"] = index._weights[: v.raw_tokens]
    arrays["removed"] = np.array(sorted(index._removed), np.int64)
    meta: dict[str, Any] = {
        "dim": index.dim,
        "params": index.params.as_dict(),
        "raw_tokens": v.raw_tokens,
        "trained_tokens": index._trained_tokens,
        "added_sq": index._added_sq,
        "added_n": index._added_n,
        "codec": None,
    }
    if v.codec is not None:
        c = v.codec
        meta["codec"] = {
            "generation": c.generation,
            "residual_bits": c.residual_bits,
            "sign_bits": c.sign_bits,
            "tier": c.tier,
            "sq_residual": c.sq_residual,
            "additive": c.additive,
            "assign_probe": c.assign_probe,
        }
        arrays.update({n: getattr(c, n) for n in CODEC_ARRAYS})
    names = list(arrays)
    meta["arrays"] = [[n, arrays[n].dtype.str, list(arrays[n].shape)] for n in names]
    sections = [json.dumps(meta).encode()] + [
        np.ascontiguousarray(arrays[n]).tobytes() for n in names
    ]
    state = _next(index, "state")
    write_sections(state, STATE_MAGIC, STATE_VERSION, sections)
    kill_point("mv_checkpoint_state")
    manifest = {
        "applied_seq": index.applied_seq,
        "state": state.name,
        "raw": Path(v.raw.path).name,
        "raw_rows": v.raw.count,
        "tier": None if v.tier is None else Path(v.tier.path).name,
        "tier_rows": 0 if v.tier is None else v.tier.count,
        "tier_dtype": None if v.tier is None else v.tier.dtype.str,
        "counter": index._files.counter,
    }
    write_sections(
        directory / MANIFEST, MANIFEST_MAGIC, MANIFEST_VERSION, [json.dumps(manifest).encode()]
    )
    kill_point("mv_checkpoint_manifest")
    index._files.retired.clear()  # not closed: see `retire`
    _clean(directory, manifest)


def _clean(directory: Path, manifest: dict[str, Any]) -> None:
    keep = {manifest["state"], manifest["raw"], manifest["tier"]}
    for path in directory.iterdir():
        if OURS.match(path.name) and path.name not in keep:
            path.unlink(missing_ok=True)


def open_into(index: MultiVectorIndex, directory: Path) -> bool:
    """Load the last checkpoint into a new index; False for a directory without one."""
    path = directory / MANIFEST
    if not path.exists():
        _clean(directory, {"state": None, "raw": None, "tier": None})
        return False
    manifest = json.loads(read_sections(path, MANIFEST_MAGIC, MANIFEST_VERSION)[0])
    state_path = directory / manifest["state"]
    version, sections = read_versioned(state_path, STATE_MAGIC, STATE_READS)
    meta = json.loads(sections[0])
    if meta["dim"] != index.dim:
        raise FormatError(f"{state_path}: dimension {meta['dim']}, expected {index.dim}")
    arrays: dict[str, npt.NDArray[Any]] = {}
    for (name, dtype, shape), body in zip(meta["arrays"], sections[1:], strict=True):
        arrays[name] = np.frombuffer(body, np.dtype(dtype)).reshape(shape).copy()
    index.params = MVBuildParams.parse(meta["params"])
    index._files.counter = int(manifest["counter"])
    index.applied_seq = int(manifest["applied_seq"])
    index._trained_tokens = int(meta["trained_tokens"])
    index._added_sq, index._added_n = float(meta["added_sq"]), int(meta["added_n"])
    index._weights = arrays["weights"]
    index._removed = set(arrays["removed"].tolist())
    raw = RowFile(directory / manifest["raw"], np.float32, index.dim, int(manifest["raw_rows"]))
    tier: RowFile | None = None
    if manifest["tier"] is not None:
        tier = RowFile(
            directory / manifest["tier"], np.dtype(manifest["tier_dtype"]), index.dim,
            int(manifest["tier_rows"]),
        )  # fmt: skip
    codec = None
    if meta["codec"] is not None:
        c = meta["codec"]
        if version == 1:  # written before the byte codebooks: its scalar grid
            arrays["books"] = _grid(arrays.pop("values"), int(c["residual_bits"]))
        codec = Codec(
            generation=int(c["generation"]),
            residual_bits=int(c["residual_bits"]),
            sign_bits=bool(c["sign_bits"]),
            tier=str(c["tier"]),
            sq_residual=float(c["sq_residual"]),
            additive=bool(c.get("additive", False)),
            assign_probe=int(c.get("assign_probe", ASSIGN_PROBE)),
            **{n: arrays[n] for n in CODEC_ARRAYS},
        )
    index._v = View(
        codec=codec, raw_tokens=int(meta["raw_tokens"]), raw=raw, tier=tier,
        **{n: arrays[n] for n in VIEW_ARRAYS},
    )  # fmt: skip
    index._doc_of = {int(s): i for i, s in enumerate(index._v.slots)}
    _clean(directory, manifest)
    return True


def _grid(values: npt.NDArray[Any], b: int) -> npt.NDArray[Any]:
    return grid_books(values, b) if b else np.zeros((0, 256, 1), np.float32)


def applied_seq(directory: Path) -> int | None:
    """The sequence the index in `directory` last checkpointed (None: never), read without
    opening it."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    return int(json.loads(read_sections(path, MANIFEST_MAGIC, MANIFEST_VERSION)[0])["applied_seq"])
