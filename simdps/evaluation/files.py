"""Atomic writes of the evaluation's text artefacts (JSON, CSV, Markdown, YAML).

Each file is written to a temporary name in its folder and moved into place with
``os.replace``, so an interrupted run never leaves a half-written report; a resumed run
trusts whatever it finds.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_text_atomic", "write_json_atomic", "write_bytes_atomic"]


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, doc: Any) -> Path:
    """JSON with NaN/Infinity allowed (Python's json reads them back)."""
    return write_text_atomic(path, json.dumps(doc, indent=2, allow_nan=True) + "\n")
