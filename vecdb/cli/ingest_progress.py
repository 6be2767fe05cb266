"""The resume state of `vecdb ingest`: its progress file and the digest of the rows loaded.

Owns the progress file (`FILE.vecdb-progress.json`, or `--resume-file PATH`): one entry per
load, keyed by input file, target, collection and tenant, so that loading the same file into
another collection (or tenant, or server) starts fresh instead of being refused. An entry
holds the rows acknowledged, whether the load completed, the input's size and mtime when the
load began, and sha256 digests of the rows acknowledged as the reader produced them (ids,
vectors or tokens, weights, payloads), one per stretch of rows a run loaded.

A `--resume` continues after the acknowledged rows when the input is unchanged (size and
mtime, no reading), or when it changed but every acknowledged row reads as before (a
malformed row at or after the stop point fixed, rows appended): the digests are recomputed
over those rows. It is refused when an earlier row changed, unless that load had completed,
in which case there is nothing to resume and the load starts over. Loads that share a progress
file at the same time (one input into two collections) save in turn under a lock of its
directory, each writing the others' entries as they are then. Never touches a database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt

from vecdb.cli.ingest_formats import MalformedInput
from vecdb.storage.manifest import fsync_dir

PROGRESS_FORMAT = "vecdb-ingest-progress"
PROGRESS_VERSION = 2  # 2: entries keyed by load, with digests; 1: one load, size/mtime only
_KEY = ("file", "target", "collection", "tenant")  # what tells one load from another


class ProgressError(Exception):
    """The progress file forbids the resume (unreadable, unknown version, input changed)."""


def progress_path(file: Path, explicit: str | None) -> Path:
    return Path(explicit) if explicit else file.with_name(file.name + ".vecdb-progress.json")


class RowDigest:
    """sha256 of consecutive rows, the same however the rows were batched: each part (ids,
    payloads, per-row extras, the raw float32 data) is hashed as one stream of its rows."""

    def __init__(self) -> None:
        self._rows = 0
        self._parts = {p: hashlib.sha256() for p in ("ids", "payloads", "extra", "data")}

    def add(self, ids: list[Any], payloads: list[Any] | None, data: npt.NDArray[Any],
            extra: list[Any] | None = None) -> None:  # fmt: skip
        """Rows with these ids and payloads (None: none), their vectors or tokens in `data`
        and, for documents, per-row `extra` (token counts, weights)."""
        if not ids:
            return
        self._rows += len(ids)
        self._parts["ids"].update(_json_items(ids))
        self._parts["payloads"].update(_json_items(payloads or [None] * len(ids)))
        if extra is not None:
            self._parts["extra"].update(_json_items(extra))
        self._parts["data"].update(np.ascontiguousarray(data, dtype=np.float32).data)

    def hexdigest(self) -> str:
        top = hashlib.sha256(str(self._rows).encode())
        for part in self._parts.values():
            top.update(part.digest())
        return top.hexdigest()


def _json_items(values: list[Any]) -> bytes:
    """The items of a JSON list each followed by ", ": concatenations do not depend on how
    the rows were split (json.dumps of a whole list is fast; of each item, slow)."""
    text = json.dumps(values, sort_keys=True, default=str)
    return text[1:-1].encode() + b", "


class Progress:
    """The entry of one load (file, target, collection, tenant) in a progress file."""

    def __init__(self, path: Path, file: Path, target: str, collection: str,
                 tenant: str | None) -> None:  # fmt: skip
        self.path = path  # the progress file
        self.file = file  # the input
        self._key = {"file": str(file.resolve()), "target": target, "collection": collection,
                     "tenant": tenant}  # fmt: skip
        self._others: list[dict[str, Any]] = []  # other loads' entries, written back as read
        self._segments: list[list[Any]] | None = []  # earlier runs' [lo, hi, digest]; None:
        # a version-1 entry, whose rows cannot be checked
        self._stat = file.stat()  # the input when this run began
        self.note = ""  # what the resume decided, when worth saying

    def start_over(self) -> None:
        """A run from row 0: its entry replaces this load's (at its first acknowledged
        batch); other loads' entries are kept if the file reads, dropped if not."""
        try:
            self._read()
        except ProgressError:
            self._others = []
        self._segments = []

    def first_row(self, resume: bool, digest_of: Callable[[int, int], str]) -> int | None:
        """Where a run starts: row 0 without `resume` (starting over), else `resume_point`
        (None: the load completed, nothing to do, which is said); what the resume decided
        goes to stderr."""
        if not resume:
            self.start_over()
            return 0
        start = self.resume_point(digest_of)
        if start is None:
            click.echo(f"{self.file}: already loaded into {self._key['collection']!r} "
                       f"(progress file {self.path})")  # fmt: skip
        elif self.note:
            click.echo(self.note, err=True)
        return start

    def resume_point(self, digest_of: Callable[[int, int], str]) -> int | None:
        """The row to continue from (0: nothing to resume), or None if this load completed
        and the input is unchanged. `digest_of(lo, hi)` digests rows lo..hi-1 of the input as
        they read now (raising the reader's MalformedInput if one of them is malformed)."""
        run = self._read()
        if run is None:
            return 0
        done, segments = int(run["rows_done"]), run.get("segments")
        same = (run.get("size"), run.get("mtime_ns")) == (self._stat.st_size,
                                                          self._stat.st_mtime_ns)  # fmt: skip
        if same:
            if run.get("complete"):
                return None
            self._segments = segments
            return done
        if segments is None:  # a version-1 entry: no digests to tell which rows changed
            raise ProgressError(
                f"progress file {self.path}: {self.file} changed (size or mtime) since the "
                "interrupted run; delete the progress file to start over"
            )
        changed = _first_changed(segments, digest_of)
        if changed is None:
            self._segments = segments
            self.note = (f"{self.file} changed since the last run, but its first {done:,} rows "
                         "(those stored) did not: continuing after them")  # fmt: skip
            return done
        if run.get("complete"):
            self._segments = []
            self.note = (f"{self.file} changed since it was loaded (rows {changed}); "
                         "nothing to resume: loading it again from row 0")  # fmt: skip
            return 0
        raise ProgressError(
            f"progress file {self.path}: rows {changed} of {self.file} changed since the "
            f"interrupted run, which stored rows 0..{done - 1}; --resume needs those rows as "
            "they were (only rows from the stop point on may change); delete the progress "
            "file or rerun without --resume to start over"
        )

    def save(self, start: int, rows_done: int, digest: RowDigest, complete: bool) -> None:
        """Record this run's rows start..rows_done-1 (`digest`) after the earlier runs' rows.
        Publish by rename so an interruption leaves the old or the new state, never half."""
        segments = self._segments
        if segments is not None:
            segments = [s for s in segments if int(s[1]) <= start]
            if rows_done > start:
                segments.append([start, rows_done, digest.hexdigest()])
        mine = {**self._key, "size": self._stat.st_size, "mtime_ns": self._stat.st_mtime_ns,
                "rows_done": rows_done, "complete": complete, "segments": segments}  # fmt: skip
        with _locked(self.path.parent):  # other loads sharing the file save in turn
            try:  # their entries as they are now, not as this run began
                self._read()
            except ProgressError:
                pass  # unreadable now: keep the entries read before
            body = {"format": PROGRESS_FORMAT, "version": PROGRESS_VERSION,
                    "loads": [*self._others, mine]}  # fmt: skip
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "w") as fh:
                json.dump(body, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)

    def _read(self) -> dict[str, Any] | None:
        """Read the file: keep the other loads' entries, return this load's (None if none)."""
        self._others = []
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ProgressError(
                f"progress file {self.path}: unreadable ({exc}); delete it to start over"
            ) from None
        if not isinstance(state, dict):
            state = {}
        version = state.get("version")
        if state.get("format") != PROGRESS_FORMAT or version not in (1, PROGRESS_VERSION):
            raise ProgressError(
                f"progress file {self.path}: unknown format {state.get('format')!r} version "
                f"{version!r} (supported: {PROGRESS_FORMAT!r} versions 1 and {PROGRESS_VERSION})"
            )
        if version == 1:  # one load, its fields at the top level, no digests
            entry = {k: v for k, v in state.items() if k not in ("format", "version")}
            entry["file"] = str(Path(str(entry.get("file", ""))).resolve())
            loads = [{"tenant": None, "segments": None, **entry}]
        else:
            loads = [e for e in state.get("loads") or [] if isinstance(e, dict)]
        mine = None
        for entry in loads:
            if all(entry.get(k) == v for k, v in self._key.items()):
                mine = entry
            else:
                self._others.append(entry)
        return mine


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (flock of its descriptor; released when closed,
    also by a killed process): two loads whose entries share a progress file, e.g. one input
    loaded into two collections at once, each read the other's entry and write the file in
    turn, instead of overwriting each other's progress or one's rename failing."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _first_changed(segments: list[list[Any]], digest_of: Callable[[int, int], str]) -> str | None:
    """The first stretch of rows that no longer reads as when it was loaded, if any."""
    for lo, hi, digest in segments:
        try:
            now = digest_of(int(lo), int(hi))
        except MalformedInput as exc:
            return f"{lo}..{int(hi) - 1} (row {exc.row} is now malformed: {exc.reason})"
        if now != digest:
            return f"{lo}..{int(hi) - 1}"
    return None
