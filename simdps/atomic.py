"""Atomic file writes: every artefact goes to a temporary name in its folder, then ``os.replace``.

A crash or a kill -9 therefore never leaves a half-written output, report, checkpoint or
index file: readers see the old file or the new one, nothing in between.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic", "write_json_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, on error delete it.

    ``suffix`` lets writers that infer the format from the name (numpy, soundfile) see it.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, doc: Any, *, sort_keys: bool = False) -> Path:
    """Indented JSON (NaN/Infinity allowed: Python's json reads them back) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(doc, indent=2, sort_keys=sort_keys, allow_nan=True) + "\n")
