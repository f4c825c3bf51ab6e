"""One corpus file's work, run in a worker process: hash, decode, embed, write its shard.

The decode is streamed (soundfile blocks -> mono -> soxr stream to 12 kHz) into the
embedding, which embeds a block of positions as soon as its contexts have arrived: a worker
holds one block's 12 kHz samples and frame features and the file's embeddings (float16, as
the shard stores them: 21 MB per hour of audio), never the whole file, at its native rate or
at 12 kHz.
Every failure a file can cause (unreadable, empty, damaged) is returned as a message,
never raised: one bad file must not stop a build.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from simdps.audio import audio_info, content_hash, sample_problem, to_mono
from simdps.config import SearchConfig
from simdps.errors import SimDPSError
from simdps.indexer.embed import ContextPCA, SignalTail, embed_stream
from simdps.indexer.layout import read_shard, shard_path, signal_path, write_shard, writing_signal

__all__ = ["FileTask", "FileResult", "decode_search_signal", "process_file", "init_worker"]

_BLOCK_FRAMES = 1 << 18  # ~6 s at 44.1 kHz per soundfile block


@dataclass(frozen=True)
class FileTask:
    rel_path: str
    abs_path: str
    known_hash: str | None  # the catalog's hash, when the file was indexed before
    cache_dir: str
    pca_path: str
    signals_index: str | None = None  # the index folder that keeps the file's search signal (keep_signals)


@dataclass(frozen=True)
class FileResult:
    rel_path: str
    content_hash: str | None
    unchanged: bool  # content equals the catalog's: nothing to do
    error: str | None
    sample_rate: int | None = None
    channels: int | None = None
    frames: int | None = None
    n_positions: int = 0
    n_pre: int = 0  # positions with a pre-context vector
    n_post: int = 0  # positions with a post-context vector
    seconds: float = 0.0  # wall time spent (hash + decode + embed)
    reused_shard: bool = False

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.frames and self.sample_rate else 0.0


def _expected_length(frames: int, sr_in: int, sr_out: int) -> int:
    """Samples the resampler gives for ``frames`` input samples, with a margin."""
    return int(math.ceil(frames * sr_out / sr_in)) + 64


def search_signal_chunks(path: str | os.PathLike, cfg: SearchConfig = SearchConfig(), *,
                         start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Frames ``[start, stop)`` of a file, mono, at the search rate: consecutive float32
    chunks, decoded and resampled block by block (channel mean, then soxr HQ).

    The chunks joined are :func:`decode_search_signal`'s signal; nothing holds the whole file.
    A decoding failure, a NaN/Inf sample or one beyond ``MAX_SAMPLE`` raises :class:`SimDPSError` when reached.
    """
    def checked(chunk: np.ndarray) -> np.ndarray:
        problem = sample_problem(chunk, locate=False)
        if problem is not None:
            raise SimDPSError(f"{path}: {problem}")
        return chunk

    # (An exception in the consumer is not thrown in here at the yields, so this converts
    # only the decoding's own failures.)
    try:
        with sf.SoundFile(str(path)) as f:
            stream = None if f.samplerate == cfg.sample_rate else soxr.ResampleStream(
                f.samplerate, cfg.sample_rate, 1, dtype="float32", quality="HQ")
            if start:
                f.seek(start)
            remaining = max(0, (f.frames if stop is None else min(stop, f.frames)) - start)
            while remaining > 0:
                block = f.read(min(_BLOCK_FRAMES, remaining), dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                remaining -= len(block)
                mono = to_mono(block)  # channel mean (column by column: numpy's mean(axis=1) is ~6x slower)
                yield checked(mono if stream is None else stream.resample_chunk(mono, last=False))
            if stream is not None:
                yield checked(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    except SimDPSError:
        raise
    except Exception as exc:
        raise SimDPSError(f"{path}: decoding failed ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}); "
                          "the file may be damaged") from None


def decode_search_signal(path: str | os.PathLike, cfg: SearchConfig = SearchConfig(), *,
                         start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Frames ``[start, stop)`` of a file, mono, at the search rate, streamed block by block.

    Returns ``(x12k float32, native sample rate)``. Equal (to float32 rounding) to
    ``retrieval.features.search_signal`` of the same frames: channel mean, then soxr HQ.
    """
    info = audio_info(path)
    stop = info.frames if stop is None else min(stop, info.frames)
    # Written into one array sized for the whole output (no list of blocks to join: that
    # doubled a long file's peak); grown in the unlikely case the resampler gives more.
    x = SignalTail(_expected_length(max(0, stop - start), info.sample_rate, cfg.sample_rate))
    for chunk in search_signal_chunks(path, cfg, start=start, stop=stop):
        x.append(chunk)
    return np.ascontiguousarray(x.read(0, x.end)), info.sample_rate


_PCA_CACHE: dict[str, ContextPCA] = {}


def _pca(path: str) -> ContextPCA:
    if path not in _PCA_CACHE:
        _PCA_CACHE.clear()
        _PCA_CACHE[path] = ContextPCA.load(path)
    return _PCA_CACHE[path]


def init_worker() -> None:
    """Worker processes use one BLAS/OpenMP thread each: N workers = N cores."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn (librosa)
        pass


def _keep_signal(path: str, signal: Path | None, cfg: SearchConfig) -> None:
    """Decode a file already embedded, only to keep its search signal, unless none is wanted or it is
    kept already (a cache: failures are left to the search, which then decodes the file itself)."""
    try:
        with _kept(signal) as write:
            if write is not None:
                for chunk in search_signal_chunks(path, cfg):
                    write(chunk)
    except (SimDPSError, OSError):
        pass


def _kept(signal: Path | None) -> ContextManager[Callable[[np.ndarray], None] | None]:
    """:func:`writing_signal` into ``signal``, or None when no signal is wanted or it is kept already."""
    return nullcontext() if signal is None or signal.exists() else writing_signal(signal)


def _written(chunks: Iterator[np.ndarray], write: Callable[[np.ndarray], None]) -> Iterator[np.ndarray]:
    for chunk in chunks:
        write(chunk)
        yield chunk


def process_file(task: FileTask, cfg: SearchConfig) -> FileResult:
    """Hash ``task``'s file; unless unchanged, embed it into its shard (or reuse an existing shard)."""
    t0 = time.perf_counter()
    try:
        digest = content_hash(task.abs_path)
    except OSError as exc:
        if os.path.islink(task.abs_path) and not os.path.exists(task.abs_path):
            why = f"broken link: its target {os.readlink(task.abs_path)} does not exist (an unmounted drive?)"
        else:
            why = f"cannot read: {exc.strerror or exc}"
        return FileResult(task.rel_path, None, False, why)
    signal = signal_path(task.signals_index, digest, cfg.sample_rate) if task.signals_index else None
    if digest == task.known_hash:
        _keep_signal(task.abs_path, signal, cfg)  # keep_signals turned on for an indexed file
        return FileResult(task.rel_path, digest, True, None, seconds=time.perf_counter() - t0)
    shard = shard_path(task.cache_dir, digest)
    if shard.exists():  # finished by an interrupted build, or the same content under another name
        try:
            emb, meta = read_shard(shard)
            _keep_signal(task.abs_path, signal, cfg)
            return FileResult(task.rel_path, digest, False, None, meta["sample_rate"], meta["channels"],
                              meta["frames"], len(emb), int(emb.has_pre.sum()), int(emb.has_post.sum()),
                              time.perf_counter() - t0, reused_shard=True)
        except Exception:  # a damaged cache file is recomputed
            shard.unlink(missing_ok=True)
    try:
        info = audio_info(task.abs_path)
        pca = _pca(task.pca_path)
        pca.use_filterbank(cfg)  # an incremental build's features match the live index's
        chunks = search_signal_chunks(task.abs_path, cfg)
        try:
            # Embedded while decoded (memory flat in the file's length), the signal kept on
            # the way when wanted: before the shard, as a shard means the file is done.
            with _kept(signal) as keep:
                emb, n12 = embed_stream(chunks if keep is None else _written(chunks, keep), pca, cfg,
                                        expected_samples=_expected_length(info.frames, info.sample_rate,
                                                                          cfg.sample_rate),
                                        dtype=np.float16)  # as the shard stores them
            write_shard(shard, emb, {"sample_rate": info.sample_rate, "channels": info.channels,
                                     "frames": info.frames, "n_samples_12k": n12})
        except OSError as exc:  # a full disk, say: this file fails, the index stays consistent
            raise SimDPSError(f"cannot write its embeddings into the index folder ({exc.strerror or exc}); "
                              "free some disk space and run the build again") from None
    except SimDPSError as exc:
        return FileResult(task.rel_path, digest, False, str(exc).replace(task.abs_path + ": ", ""),
                          seconds=time.perf_counter() - t0)
    except MemoryError:
        return FileResult(task.rel_path, digest, False, "out of memory while embedding this file",
                          seconds=time.perf_counter() - t0)
    return FileResult(task.rel_path, digest, False, None, info.sample_rate, info.channels, info.frames,
                      len(emb), int(emb.has_pre.sum()), int(emb.has_post.sum()), time.perf_counter() - t0)

