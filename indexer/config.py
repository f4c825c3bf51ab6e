"""Index settings: one typed dataclass, serialised to ``config.json`` beside the index."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from simdps.config import SearchConfig
from simdps.errors import SimDPSError

__all__ = ["IndexConfig", "CONFIG_FILE", "FORMAT_VERSION", "read_index_config"]

CONFIG_FILE = "config.json"
FORMAT_VERSION = 2  # 2: inner-product FAISS indexes, zstd-compressed on disk


@dataclass(frozen=True)
class IndexConfig:
    """How an index is built and searched.

    ``search`` holds the paper's feature and cost settings (sec. 3.2, 4.3); positions are
    every ``search.coarse_hop`` samples at 12 kHz (Lh, about 85 ms). The embedding of one
    context side (see ``indexer/embed.py``) is a PCA of the weighted STFT block (after a
    per-frame PCA to ``stft_frame_dims``) to ``stft_dims``, and of the weighted chroma block
    to ``chroma_dims``, each scaled by sqrt(alpha_k), concatenated.
    """

    search: SearchConfig = field(default_factory=SearchConfig)
    stft_frame_dims: int = 32  # per-frame PCA of the 513-bin magnitude (first reduction; keeps ~98 %)
    stft_dims: int = 64  # PCA of the weighted STFT context block
    chroma_dims: int = 64  # PCA of the weighted chroma context block (keeps far less of its block than
    # the STFT PCA does: 64 + 64 found more of the exact top 10 than 96 + 32 or 80 + 48, docs/PERFORMANCE.md)
    pca_train_positions: int = 10_000  # context blocks sampled to fit the PCA
    pca_train_files: int = 64  # at most this many files decoded for the PCA sample
    factory: str | None = None  # FAISS index_factory string; None = chosen by corpus size
    flat_max_vectors: int = 100_000  # per side; above this the default is IVF-PQ
    pq_m: int = 32  # PQ sub-quantizers of the default IVF-PQ (4 dims each)
    pq_nbits: int = 4  # bits per sub-quantizer code: 32 x 4 bits = 16 bytes a vector (+ the id, ~2 bytes on disk);
    # at the same 16 bytes, 32 x 4 found more of the exact top 10 than 16 x 8 (docs/PERFORMANCE.md)
    train_vectors_per_list: int = 40  # IVF training sample = this x nlist (FAISS: 30..256; 39 avoids its warning)
    nprobe: int = 128  # IVF lists visited per query
    ef_search: int = 128  # HNSW search breadth, if an HNSW factory is used
    seed: int = 0
    # Also keep each file's 12-kHz search signal (raw float32, ~173 MB per hour of audio, beside
    # the ~2 MB per hour index): a search then reads a re-score window from it instead of decoding
    # and resampling the source (~2x faster queries, ~2.7x for 44.1-kHz stereo files). Off by default.
    keep_signals: bool = False

    @property
    def dim(self) -> int:
        return self.stft_dims + self.chroma_dims

    def check(self) -> None:
        """Raise :class:`SimDPSError` for settings no index can be built with, before a build
        writes them or decodes anything (they used to fail half-way, or deep in FAISS)."""
        from simdps.indexer import store
        from simdps.indexer.embed import _frames_used, check_coarse_hop

        s = self.search
        for name in ("sample_rate", "n_fft", "hop_length", "coarse_hop"):
            value = getattr(s, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SimDPSError(f"search setting {name} must be a whole number >= 1, got {value!r}")
        check_coarse_hop(s)
        n1, n2 = _frames_used(s)
        if not (n1 and n2):
            raise SimDPSError("the context holds no weighted frame; make the context (Lc) and both ramps "
                              f"longer than one {s.n_fft}-sample frame")
        limits = (("stft_frame_dims", self.stft_frame_dims, s.n_fft // 2 + 1),
                  ("stft_dims", self.stft_dims, n1 * min(self.stft_frame_dims, s.n_fft // 2 + 1)),
                  ("chroma_dims", self.chroma_dims, n2 * 12))
        for name, value, most in limits:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise SimDPSError(f"{name} must be a whole number from 1 to {most} (the values its block "
                                  f"holds), got {value!r}")
        if self.factory is not None:
            store.new_index(self.factory, self.dim)  # FAISS's own parse, as a SimDPSError

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "IndexConfig":
        data = dict(data)
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise SimDPSError(f"unknown index settings {sorted(unknown)}; this index was written by "
                              "another SimDPS version: rebuild it with `simdps-index build --rebuild`")
        search = data.pop("search", {})
        return cls(search=SearchConfig(**search), **data)


def read_index_config(index_dir: str | Path, *, any_version: bool = False) -> dict:
    """The raw ``config.json`` of an index folder, with a clear error when it is missing, is not
    a SimDPS index's, or (unless ``any_version``, for a rebuild) is of another format version."""
    path = Path(index_dir) / CONFIG_FILE
    if not path.exists():
        raise SimDPSError(f"{index_dir}: not a SimDPS index (no {CONFIG_FILE}); "
                          "build one with `simdps-index build CORPUS --index DIR`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SimDPSError(f"{path}: unreadable ({exc}); if this folder is a SimDPS index, delete {CONFIG_FILE} "
                          "and rebuild it with `simdps-index build --rebuild`") from None
    if not isinstance(data, dict) or "format_version" not in data or not isinstance(data.get("index"), dict):
        raise SimDPSError(f"{index_dir}: not a SimDPS index (its {CONFIG_FILE} belongs to something else); "
                          "choose an empty or new folder for the index")
    if data["format_version"] != FORMAT_VERSION and not any_version:
        raise SimDPSError(f"{path}: index format {data['format_version']} is not "
                          f"{FORMAT_VERSION}; rebuild it with `simdps-index build --rebuild`")
    return data
