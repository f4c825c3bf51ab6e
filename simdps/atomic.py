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

__all__ = ["atomic_path", "temp_file", "temp_dir", "write_bytes_atomic", "write_text_atomic", "write_json_atomic"]

# The process's umask, read once (reading it means setting it, so not on every write).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def temp_file(folder: str | os.PathLike, *, prefix: str, suffix: str = ".tmp") -> str:
    """A new empty file in ``folder`` with the permissions of any file this user creates
    (``0o666`` less the umask), not ``tempfile``'s owner-only ``0o600``: the output moved onto
    its final name (a restored track, an index another user searches) must be readable as usual."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    return tmp


def temp_dir(folder: str | os.PathLike, *, prefix: str) -> Path:
    """A new folder in ``folder`` with the usual permissions (``0o777`` less the umask), not ``0o700``."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, on error delete it.

    ``suffix`` lets writers that infer the format from the name (numpy, soundfile) see it.
    """
    path = Path(path)
    tmp = temp_file(path.parent, prefix=f".{path.name}.", suffix=suffix)
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
