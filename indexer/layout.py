"""Where an index keeps its files, and how each is written atomically.

::

    DIR/config.json              entry point: format, corpus root, catalog URL, settings
    DIR/catalog.sqlite           SQL catalog (default; --db puts it elsewhere)
    DIR/gen-<B>/                 the index files build B made live (one folder, renamed into place)
        config.json              IndexConfig, factory, PCA variance kept, counts
        pca.npz                  the context PCA (indexer/embed.py)
        pre.faiss.zst, post...   FAISS indexes of pre- and post-context embeddings (zstd-compressed)
        positions.parquet        one row per position: FAISS id -> track, 12 kHz and native sample
    DIR/cache/<pca>/<hash>.npz   per-file embedding shards (content-addressed; resume and rebuilds)
    DIR/signals/<hash>-<sr>.f32  with ``keep_signals``: each file's 12-kHz search signal, raw
                                 float32, which searches read instead of decoding and resampling

The live generation is the one the catalog's last committed build names; folders of any
other generation are left-overs of an interrupted build and are removed by the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simdps.atomic import atomic_path
from simdps.errors import SimDPSError
from simdps.indexer.config import CONFIG_FILE
from simdps.indexer.embed import TrackEmbeddings

__all__ = [
    "gen_dir", "generation_config", "list_generations", "remove_other_generations", "shard_path", "write_shard", "read_shard",
    "POSITIONS_SCHEMA", "write_parquet_atomic", "read_positions", "pca_fingerprint", "folder_bytes",
    "SIGNALS_DIR", "signal_path", "kept_signal_hashes", "writing_signal", "read_signal",
]

SIGNALS_DIR = "signals"

GEN_PREFIX = "gen-"

POSITIONS_SCHEMA = pa.schema([
    ("id", pa.int64()),  # FAISS id of both the pre and the post vector at this position
    ("track_id", pa.int32()),
    ("position_12k", pa.int64()),  # m * Lh at the search rate
    ("native_sample", pa.int64()),  # the same instant at the file's own rate
    ("has_pre", pa.bool_()),
    ("has_post", pa.bool_()),
])


def gen_dir(index_dir: str | Path, generation: int) -> Path:
    return Path(index_dir) / f"{GEN_PREFIX}{generation}"


def generation_config(gdir: str | Path) -> dict:
    """A generation folder's ``config.json``: its index settings, FAISS factory, vector counts."""
    return json.loads((Path(gdir) / CONFIG_FILE).read_text(encoding="utf-8"))


def list_generations(index_dir: str | Path) -> list[int]:
    out = []
    for p in Path(index_dir).glob(f"{GEN_PREFIX}*"):
        tail = p.name[len(GEN_PREFIX):]
        if p.is_dir() and tail.isdigit():
            out.append(int(tail))
    return sorted(out)


def remove_other_generations(index_dir: str | Path, keep: int | None) -> None:
    """Delete generation folders other than ``keep`` and temporary folders of killed builds."""
    for p in Path(index_dir).glob(f"{GEN_PREFIX}*"):
        tail = p.name[len(GEN_PREFIX):]
        if p.is_dir() and (not tail.isdigit() or int(tail) != keep):
            shutil.rmtree(p, ignore_errors=True)


def pca_fingerprint(pca_path: str | Path) -> str:
    """Short content hash of a PCA file: names the shard cache it is valid for."""
    return hashlib.blake2b(Path(pca_path).read_bytes(), digest_size=6).hexdigest()


def shard_path(cache_dir: str | Path, content_hash: str) -> Path:
    return Path(cache_dir) / f"{content_hash}.npz"


def write_shard(path: str | Path, emb: TrackEmbeddings, meta: dict) -> None:
    """One file's embeddings (float16: the cache is 4x smaller than float32 at ~1e-3 relative precision)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a killed build leaves only `.NAME.*.tmp`
        np.savez(f, positions=emb.positions, has_pre=emb.has_pre, has_post=emb.has_post,
                 pre=emb.pre.astype(np.float16, copy=False), post=emb.post.astype(np.float16, copy=False),
                 meta=np.array(json.dumps(meta)))


def signal_path(index_dir: str | Path, content_hash: str, sample_rate: int) -> Path:
    """Where an index keeps a file's search signal at ``sample_rate`` (named by both: a rebuild at
    another search rate never reads a signal made for the previous one)."""
    return Path(index_dir) / SIGNALS_DIR / f"{content_hash}-{sample_rate}.f32"


def kept_signal_hashes(index_dir: str | Path, sample_rate: int) -> set[str]:
    """Content hashes of the files whose search signal at ``sample_rate`` the index keeps."""
    suffix = signal_path("", "", sample_rate).name
    folder = Path(index_dir) / SIGNALS_DIR
    return {p.name[:-len(suffix)] for p in folder.glob(f"*{suffix}")} if folder.is_dir() else set()


@contextmanager
def writing_signal(path: str | Path) -> Iterator[Callable[[np.ndarray], None]]:
    """Yield a function that appends samples to a file's search signal (raw little-endian
    float32), written through a temporary file moved onto ``path`` when the block ends
    without an error (and deleted otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield lambda samples: np.ascontiguousarray(samples, dtype="<f4").tofile(f)


def read_signal(path: str | Path, lo: int, hi: int) -> np.ndarray:
    """Samples ``[lo, hi)`` of a stored search signal as float32, zero outside it (one read).

    Raises ``OSError`` when the file is gone."""
    out = np.zeros(max(0, hi - lo), dtype=np.float32)
    with open(path, "rb") as f:
        n = os.fstat(f.fileno()).st_size // 4
        a, b = max(lo, 0), min(hi, n)
        if b > a:
            out[a - lo:b - lo] = np.frombuffer(os.pread(f.fileno(), 4 * (b - a), 4 * a), dtype="<f4")
    return out


def read_shard(path: str | Path) -> tuple[TrackEmbeddings, dict]:
    with np.load(path, allow_pickle=False) as z:
        emb = TrackEmbeddings(z["positions"], z["has_pre"], z["has_post"],
                              z["pre"].astype(np.float32), z["post"].astype(np.float32))
        meta = json.loads(str(z["meta"]))
    return emb, meta


# Positions are runs of consecutive integers: delta encoding stores ~0.2 bytes a row
# (71 KB instead of 1.5 MB for the 10-h benchmark corpus's 432k rows).
_DELTA = {name: "DELTA_BINARY_PACKED" for name in ("id", "track_id", "position_12k", "native_sample")}


def write_parquet_atomic(path: str | Path, table: pa.Table) -> None:
    """A positions table to ``path`` through a temporary file and os.replace."""
    delta = {k: v for k, v in _DELTA.items() if k in table.column_names}
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=[c for c in table.column_names if c not in delta],
                       column_encoding=delta)


def read_positions(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise SimDPSError(f"{path}: missing; rebuild the index with `simdps-index build --rebuild`")
    return pq.read_table(path, schema=POSITIONS_SCHEMA)


def folder_bytes(path: str | Path) -> int:
    """Total size of the regular files under ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
