"""An ext4 file system on a loop-mounted image file, for the tests that need a real disk of
their own (disk full, power cut). Needs root, `mkfs.ext4` and a working `mount -o loop`;
otherwise the test is skipped with the reason (never silently passed). Owns nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def make_image(image: Path, mib: int) -> None:
    """A fresh `mib` MiB ext4 image with no reserved blocks."""
    if os.geteuid() != 0:
        pytest.skip("a loop-mounted image needs root")
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed")
    with open(image, "wb") as f:
        f.truncate(mib * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-m", "0", "-F", str(image)], check=True)


@contextmanager
def mounted(image: Path, mnt: Path, options: str = "") -> Iterator[Path]:
    """`image` mounted at `mnt` (created) through a loop device; lazily unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("a loop-mounted image needs root")
    mnt.mkdir(exist_ok=True)
    opts = "loop" + (f",{options}" if options else "")
    done = subprocess.run(["mount", "-o", opts, str(image), str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@contextmanager
def loop_disk(image: Path, mnt: Path, mib: int, options: str = "") -> Iterator[Path]:
    """A fresh `mib` MiB ext4 file system mounted at `mnt`."""
    make_image(image, mib)
    with mounted(image, mnt, options) as path:
        yield path
