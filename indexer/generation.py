"""One generation of index files: the FAISS indexes, positions and PCA a build makes live.

A generation is written into a temporary folder inside the index and renamed to
``gen-<build>`` only when complete; the catalog transaction that names it is what makes it
live (``indexer/build.py``). Vectors come from the content-addressed shards in ``cache/``:
the live FAISS indexes are updated in place (ids of removed tracks removed, new tracks
appended with fresh ids) unless the structure changes or cannot remove ids, in which case
they are rebuilt and retrained from the shards.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from simdps.atomic import temp_dir, write_json_atomic
from simdps.config import to_dict
from simdps.indexer import store
from simdps.indexer.catalog import TrackRow
from simdps.indexer.config import CONFIG_FILE, FORMAT_VERSION, IndexConfig
from simdps.indexer.embed import PCA_FILE, ContextPCA
from simdps.indexer.layout import (
    POSITIONS_SCHEMA,
    gen_dir,
    generation_config,
    read_positions,
    read_shard,
    shard_path,
    write_parquet_atomic,
)

__all__ = ["write_generation", "train_new", "live_factory"]


def write_generation(index_dir: Path, generation: int, config: IndexConfig, cache_dir: Path, pca_path: Path,
                     live_dir: Path | None, kept_ok: list[TrackRow], new_rows: list[TrackRow],
                     dropped: list[TrackRow], side_counts: dict[str, tuple[int, int]]
                     ) -> tuple[str, bool, list[TrackRow]]:
    """Write ``gen-<generation>`` with the kept and new tracks' vectors (not yet live).

    ``live_dir`` is the live generation to update (None: build from the shards alone);
    ``dropped`` its tracks to remove; ``side_counts`` the (pre, post) vector counts of
    the new tracks by path. Returns ``(factory, full, placed)``: ``full`` when the FAISS
    indexes were rebuilt from the shards, ``placed`` the rows whose ``first_row`` this
    generation sets (the new ones; every one after a full rebuild).
    """
    dim = config.dim
    cfg = config.search
    counts_new = [side_counts[t.path] for t in new_rows]
    old_factory = live_factory(live_dir)
    if live_dir is not None:
        live_table = read_positions(live_dir / "positions.parquet")
        dropped_ids = {t.id for t in dropped}
        drop_mask = np.isin(live_table.column("track_id").to_numpy(), list(dropped_ids))
        keep_table = live_table.filter(pa.array(~drop_mask))
        n_side = (int(np.sum(keep_table.column("has_pre").to_numpy())),
                  int(np.sum(keep_table.column("has_post").to_numpy())))
    else:
        keep_table, n_side = None, (0, 0)
    n_side = (n_side[0] + sum(c[0] for c in counts_new), n_side[1] + sum(c[1] for c in counts_new))
    factory = config.factory or store.choose_factory(
        max(n_side), dim, flat_max_vectors=config.flat_max_vectors,
        pq_m=config.pq_m, pq_nbits=config.pq_nbits)

    tmp_dir = temp_dir(index_dir, prefix=f"gen-{generation}.tmp")
    full = live_dir is None or factory != old_factory
    indexes = {}
    if not full:
        indexes = {s: store.read_index(live_dir / f"{s}.faiss.zst") for s in ("pre", "post")}
        ranges = [(t.first_row, t.first_row + t.n_positions) for t in dropped if t.first_row is not None]
        if not all(store.remove_id_ranges(idx, ranges) for idx in indexes.values()):
            full = True  # the structure cannot remove ids (HNSW): rebuild from the shards
    tables: list[pa.Table] = []
    if full:
        all_rows = sorted(kept_ok, key=lambda t: t.path) + new_rows
        first = 0
        add_rows = []
        for t in all_rows:
            add_rows.append(replace(t, first_row=first))
            first += t.n_positions
        indexes = train_new(factory, add_rows, config, cache_dir)
    else:
        first = _next_row(keep_table)
        add_rows = []
        for t in new_rows:
            add_rows.append(replace(t, first_row=first))
            first += t.n_positions
        tables.append(keep_table)
    for t in add_rows:
        emb, meta = read_shard(shard_path(cache_dir, t.content_hash))
        ids = t.first_row + np.arange(len(emb), dtype=np.int64)
        store.add_vectors(indexes["pre"], emb.pre[emb.has_pre], ids[emb.has_pre])
        store.add_vectors(indexes["post"], emb.post[emb.has_post], ids[emb.has_post])
        native = np.rint(emb.positions * (meta["sample_rate"] / cfg.sample_rate)).astype(np.int64)
        tables.append(pa.table({
            "id": ids, "track_id": np.full(len(emb), t.id, dtype=np.int32),
            "position_12k": emb.positions.astype(np.int64), "native_sample": native,
            "has_pre": emb.has_pre, "has_post": emb.has_post,
        }, schema=POSITIONS_SCHEMA))
    table = pa.concat_tables(tables) if tables else POSITIONS_SCHEMA.empty_table()
    table = table.sort_by("id")
    for side, idx in indexes.items():
        store.write_index_atomic(idx, tmp_dir / f"{side}.faiss.zst")
    write_parquet_atomic(tmp_dir / "positions.parquet", table)
    shutil.copyfile(pca_path, tmp_dir / PCA_FILE)
    pca = ContextPCA.load(pca_path)
    write_json_atomic(tmp_dir / CONFIG_FILE, {
        "format_version": FORMAT_VERSION, "generation": generation, "factory": factory,
        "index": config.to_dict(), "search": to_dict(cfg), "dim": dim,
        "pca_variance_kept": pca.explained, "positions": table.num_rows,
        "vectors": {s: int(idx.ntotal) for s, idx in indexes.items()},
    }, sort_keys=True)
    os.replace(tmp_dir, gen_dir(index_dir, generation))
    return factory, full, add_rows


def train_new(factory: str, rows: list[TrackRow], config: IndexConfig, cache_dir: Path) -> dict:
    """Empty indexes of ``factory``, trained on a seeded sample of the shards' vectors."""
    dim = config.dim
    indexes = {s: store.new_index(factory, dim) for s in ("pre", "post")}
    if all(idx.is_trained for idx in indexes.values()):
        return indexes
    ivf = [store.faiss.extract_index_ivf(idx) for idx in indexes.values() if store.is_ivf(idx)]
    want = config.train_vectors_per_list * (ivf[0].nlist if ivf else 256)
    want = max(want, 256 * 40)  # PQ codebooks: 256 centroids x >= 39 points each
    total = sum(t.n_positions for t in rows)
    keep_p = min(1.0, 1.25 * want / max(1, total))  # a margin, then exactly `want` (FAISS warns below)
    rng = np.random.default_rng(config.seed)
    samples = {"pre": [], "post": []}
    for t in rows:
        emb, _ = read_shard(shard_path(cache_dir, t.content_hash))
        pick = rng.random(len(emb)) < keep_p
        samples["pre"].append(emb.pre[pick & emb.has_pre])
        samples["post"].append(emb.post[pick & emb.has_post])
    for side, idx in indexes.items():
        sample = np.concatenate(samples[side])
        sample = sample[rng.permutation(len(sample))[:want]]
        store.train_index(idx, sample, seed=config.seed)
    return indexes


def live_factory(live_dir: Path | None) -> str | None:
    """The FAISS factory string of a generation folder (None for none)."""
    if live_dir is None:
        return None
    return generation_config(live_dir)["factory"]


def _next_row(table: pa.Table | None) -> int:
    if table is None or table.num_rows == 0:
        return 0
    return int(pc.max(table.column("id")).as_py()) + 1
