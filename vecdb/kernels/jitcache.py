"""numba's on-disk cache, stamped by the whole kernels package.

numba keys a cached kernel by its own source file only, yet compiles the njit functions it
calls from other files into it. After an edit to `headgraph.py`, `single.py`'s cached kernel
keeps the old helpers until `single.py` itself changes: an editable install after a
`git pull` would run stale code. This module owns the fix: `install()` wraps numba's
file-backed cache locators so that the stamp of any vecdb source file also carries
`package_digest()`, a hash of every module of this package. Any change to a kernel then
invalidates every vecdb kernel's cache (numba recompiles and overwrites it); files outside
vecdb keep numba's own stamp. The package `__init__` calls `install()` before any kernel
module is imported (importing this module installs it), since numba takes a function's stamp
when it is decorated.

It leans on numba internals (`CacheImpl._locator_classes`, the file-backed locator mixin);
when they are not found it logs once and leaves numba as it is (per-file stamps).
"""

from __future__ import annotations

import hashlib
import logging
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger("vecdb.kernels.jitcache")

KERNELS = Path(__file__).resolve().parent
PACKAGE = KERNELS.parent  # the vecdb package: its numba users (kernels, bench) are stamped


@cache
def package_digest() -> str:
    """sha256 of the names and contents of this package's modules, in name order."""
    h = hashlib.sha256()
    for path in sorted(KERNELS.glob("*.py")):
        h.update(path.name.encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


@cache
def _ours(py_file: str) -> bool:
    try:
        return Path(py_file).resolve().is_relative_to(PACKAGE)
    except (OSError, ValueError):
        return False


def _stamped(base: type) -> type:
    def get_source_stamp(self: Any) -> Any:
        stamp = base.get_source_stamp(self)  # type: ignore[attr-defined]
        if _ours(str(getattr(self, "_py_file", ""))):
            return (stamp, "vecdb.kernels", package_digest())
        return stamp

    name = f"PackageStamped{base.__name__}"
    return type(name, (base,), {"get_source_stamp": get_source_stamp, "_vecdb_stamped": True})


def install() -> bool:
    """Stamp vecdb's cached kernels with `package_digest()`; True when in effect."""
    try:
        from numba.core import caching

        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # type: ignore[attr-defined]
        mixin = caching._SourceFileBackedLocatorMixin
        classes = list(impl._locator_classes)
    except (ImportError, AttributeError) as e:
        log.warning("numba cache stamps left per file (kernels may load stale callees): %s", e)
        return False
    if any(getattr(c, "_vecdb_stamped", False) for c in classes):
        return True
    impl._locator_classes = [_stamped(c) if issubclass(c, mixin) else c for c in classes]
    return True


install()
