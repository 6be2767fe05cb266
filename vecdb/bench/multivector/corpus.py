"""The text of the multi-vector benchmark: Python standard-library docstrings.

Owns turning the running interpreter's standard library into documents and queries
(research/multivector.md section 5.2): every module, class and function docstring parsed with
`ast` (paths with a part starting with "test", `idlelib` and `site-packages` skipped, exact
duplicates dropped), a document is the docstring body (first line removed) and its query is
the first line, whose own body is its single pseudo-relevant document. Word tokens are
`[a-z]+|[0-9]+` of the lower-cased text. Which words survive (a vocabulary), how they become
vectors and the cache live in `embed`; this module only reads source files.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

WORD = re.compile(r"[a-z]+|[0-9]+")
SKIP_PARTS = ("idlelib", "site-packages")
DOC_KINDS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Docstring:
    """One distinct docstring: its first line (the query text) and the rest (the body)."""

    source: str  # path relative to the stdlib root
    first_line: str
    body: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _skipped(parts: tuple[str, ...]) -> bool:
    return any(p.startswith("test") or p in SKIP_PARTS for p in parts)


def docstrings(root: Path | None = None) -> list[Docstring]:
    """Every distinct docstring of the standard library, in sorted path order, then `ast.walk`
    order inside a file (deterministic for one Python version)."""
    root = root or stdlib_root()
    seen: set[str] = set()
    out: list[Docstring] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _skipped(rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, DOC_KINDS):
                continue
            doc = ast.get_docstring(node)
            if not doc or doc in seen:
                continue
            seen.add(doc)
            first, _, body = doc.strip().partition("\n")
            out.append(Docstring(str(rel), first.strip(), body.strip()))
    return out


def words(text: str) -> list[str]:
    """The word tokens of `text`: runs of lower-case letters or of digits."""
    return WORD.findall(text.lower())


def corpus_sha256(items: list[Docstring]) -> str:
    """A checksum of the docstrings, recorded with every result (it changes with Python)."""
    h = hashlib.sha256()
    for d in items:
        for part in (d.source, d.first_line, d.body):
            h.update(part.encode())
            h.update(b"\0")
    return h.hexdigest()
