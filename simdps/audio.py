"""Audio I/O shared by every stage: soundfile for files, soxr for resampling.

Arrays are ``(frames, channels)`` float64 unless a function says otherwise, the
layout soundfile uses. Writing is atomic (temporary file in the target folder, then
``os.replace``) so a crash never leaves a half-written output.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from simdps.atomic import atomic_path
from simdps.errors import AudioError
from simdps.threads import default_threads

__all__ = [
    "AudioInfo",
    "as_float",
    "audio_input",
    "whole_hz",
    "audio_info",
    "read_audio",
    "read_audio_mono",
    "read_audio_ranges",
    "to_mono",
    "resample",
    "write_audio_atomic",
    "content_hash",
    "check_samples",
    "sample_problem",
    "MAX_SAMPLE",
]


@dataclass(frozen=True)
class AudioInfo:
    """What soundfile reports about a file, without decoding it."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def _check_path(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, expected an audio file")


def _unreadable(path: Path, exc: Exception) -> AudioError:
    kind = path.suffix.lstrip(".").upper()
    if kind in sf.available_formats() or kind in ("OGA", "OPUS", "AIF", "AIFC", "WAVE"):
        advice = f"it may be empty, damaged or truncated, or not really {kind}; re-export or replace it"
    else:
        advice = "use WAV, FLAC, OGG, AIFF or MP3"
    return AudioError(f"{path}: not a readable audio file ({_short(exc)}); {advice}")


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header; raise :class:`AudioError` if soundfile cannot open it."""
    path = Path(path)
    _check_path(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise _unreadable(path, exc) from None
    if info.frames <= 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    return AudioInfo(str(path), int(info.samplerate), int(info.channels), int(info.frames),
                     info.format, info.subtype)


def read_audio(
    path: str | os.PathLike,
    *,
    start: int = 0,
    stop: int | None = None,
    dtype: str = "float64",
) -> tuple[np.ndarray, int]:
    """Decode frames ``[start, stop)`` of a file as ``(frames, channels)``.

    Parameters
    ----------
    path : path of any format libsndfile reads.
    start, stop : frame range at the file's own sample rate; ``stop=None`` reads to the end.
    dtype : numpy dtype of the result.

    Returns
    -------
    data, sample_rate
    """
    parts, sr, _ = read_audio_ranges(path, [(start, stop)], dtype=dtype)
    return parts[0], sr


class KeptHandles:
    """Open decoders kept between reads of the same files, for formats whose seek from a fresh
    handle scans the file from its start: MP3 (libsndfile's mpg123). A 7-s read at 95 % of a
    10-min MP3 takes 22 ms from a fresh handle and 5.7 ms from one that has seeked before; other
    formats seek as fast fresh, and their handles are closed after each read. mpg123's state
    after a seek depends on where it seeked from, so a kept handle's samples may differ from a
    fresh handle's by float32 rounding (at most 6e-8 measured).

    Thread-safe: a handle serves one read at a time (a file read by two threads at once gets a
    second handle). A handle is reused only while its file's size, mtime and inode are those it
    was opened on, and at most ``max_open`` are kept (least recently used closed first). After
    a fork the child starts with none (a handle's file offset is shared with the parent).
    """

    FORMATS = ("MP3",)  # soundfile's name for libsndfile's MPEG container

    def __init__(self, max_open: int = 32):
        self.max_open = max_open
        self._idle: OrderedDict[str, list[tuple[tuple, sf.SoundFile]]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self, path: str, key: tuple) -> sf.SoundFile | None:
        """An idle handle of ``path`` opened on stat ``key``, or None."""
        stale = []
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's handles are not ours
                self._idle, self._count, self._pid = OrderedDict(), 0, os.getpid()
            stack = self._idle.get(path, [])
            found = None
            while stack and found is None:
                opened_on, handle = stack.pop()
                self._count -= 1
                if opened_on == key:
                    found = handle
                else:
                    stale.append(handle)
            if not stack:
                self._idle.pop(path, None)
        for handle in stale:
            handle.close()
        return found

    def give(self, path: str, key: tuple, handle: sf.SoundFile) -> None:
        """Keep ``handle`` (opened on stat ``key``) for the next read, or close it."""
        if handle.format not in self.FORMATS or self.max_open < 1:
            handle.close()
            return
        evicted = []
        with self._lock:
            if self._pid != os.getpid():
                evicted.append(handle)
            else:
                self._idle.setdefault(path, []).append((key, handle))
                self._idle.move_to_end(path)
                self._count += 1
                while self._count > self.max_open:
                    oldest, stack = next(iter(self._idle.items()))
                    evicted.append(stack.pop(0)[1])
                    self._count -= 1
                    if not stack:
                        del self._idle[oldest]
        for h in evicted:
            h.close()

    def close(self) -> None:
        with self._lock:
            handles = [h for stack in self._idle.values() for _, h in stack]
            self._idle, self._count = OrderedDict(), 0
        for h in handles:
            h.close()

    def __len__(self) -> int:
        return self._count


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def read_audio_ranges(
    path: str | os.PathLike,
    ranges: list[tuple[int, int | None]],
    *,
    dtype: str = "float64",
    handles: KeptHandles | None = None,
) -> tuple[list[np.ndarray], int, int]:
    """Decode several frame ranges ``[start, stop)`` of one file (``stop=None``: to the end),
    opening it once; returns one ``(frames, channels)`` array per range, the sample rate and
    the file's length in frames. ``handles`` keeps MP3 decoders open between calls."""
    path = Path(path)
    _check_path(path)
    try:
        key = _stat_key(path) if handles is not None else ()
    except OSError as exc:  # gone since the check above
        raise AudioError(f"{path}: cannot be read ({exc.strerror}); check the path") from None
    handle = handles.take(str(path), key) if handles is not None else None
    if handle is None:
        try:
            handle = sf.SoundFile(str(path))  # opened once: header and samples (index re-scores read many windows)
        except Exception as exc:
            raise _unreadable(path, exc) from None
    try:
        parts, sr, frames = _read_ranges(path, handle, ranges, dtype)
    except BaseException:
        handle.close()  # a handle that failed mid-read is not kept
        raise
    if handles is not None:
        handles.give(str(path), key, handle)
    else:
        handle.close()
    return parts, sr, frames


def _read_ranges(path: Path, handle: sf.SoundFile, ranges: list[tuple[int, int | None]],
                 dtype: str) -> tuple[list[np.ndarray], int, int]:
    parts = []
    frames = int(handle.frames)
    if frames <= 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    sr = int(handle.samplerate)
    for start, stop in ranges:
        start = min(max(0, int(start)), frames)
        stop = frames if stop is None else min(max(start, int(stop)), frames)
        try:
            handle.seek(start)
            data = handle.read(stop - start, dtype=dtype, always_2d=True)
        except Exception as exc:
            raise AudioError(f"{path}: decoding failed ({_short(exc)}); the file may be damaged") from None
        if data.shape[0] == 0 and stop > start:
            raise AudioError(f"{path}: decoding returned no samples; the file may be damaged")
        parts.append(data)
    return parts, sr, frames


_MONO_BLOCK = 1 << 18  # frames decoded at a time by read_audio_mono
_MONO_PARALLEL_FRAMES = 1 << 22  # from ~95 s at 44.1 kHz on, read_audio_mono decodes parts of a file at once
# Lossy formats decode sequentially: a decoder started by a seek may round its first samples
# differently (and an MP3 seek from a fresh handle scans the file from its start).
_MONO_SEQUENTIAL_FORMATS = ("MP3", "OGG")


def read_audio_mono(path: str | os.PathLike, sample_rate: int | None = None,
                    *, dtype: str = "float32", workers: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a whole file as a 1-D mono mix in ``dtype``, optionally resampled to ``sample_rate``.

    Decoded block by block and mixed as it goes, so the only whole-file array is the mono
    result: a 60-min 44.1-kHz stereo file takes 0.64 GB in float32, not the 2.5 GB of its
    float64 frames. A long file in a lossless format is decoded in ``workers`` consecutive
    parts at once (default: the CPU count, at most 4), each from its own handle: the same
    samples, ~2x faster on 2 cores (libsndfile releases the GIL).
    """
    path = Path(path)
    _check_path(path)
    try:
        handle = sf.SoundFile(str(path))
    except Exception as exc:
        raise _unreadable(path, exc) from None
    with handle:
        sr, frames, fmt = int(handle.samplerate), int(handle.frames), str(handle.format)
        if frames <= 0:
            raise AudioError(f"{path}: the file holds no audio samples")
        parts = default_threads(workers)
        if fmt in _MONO_SEQUENTIAL_FORMATS or frames < _MONO_PARALLEL_FRAMES:
            parts = 1
        mono = np.empty(frames, dtype=dtype)
        edges = [frames * i // parts for i in range(parts + 1)]

        def decode(i: int) -> int:
            """Part ``i`` into ``mono``; the frames it got (fewer only if the stream ends early)."""
            lo, hi = edges[i], edges[i + 1]
            own = handle if i == 0 else sf.SoundFile(str(path))
            try:
                own.seek(lo)
                got = lo
                while got < hi:
                    block = own.read(min(_MONO_BLOCK, hi - got), dtype=dtype, always_2d=True)
                    if block.shape[0] == 0:
                        break  # a header that promised more frames than the stream holds (some MP3/Ogg)
                    mono[got:got + block.shape[0]] = to_mono(block)
                    got += block.shape[0]
                return got - lo
            except Exception as exc:
                raise AudioError(f"{path}: decoding failed ({_short(exc)}); the file may be damaged") from None
            finally:
                if own is not handle:
                    own.close()

        if parts == 1:
            counts = [decode(0)]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(parts - 1) as pool:
                later = [pool.submit(decode, i) for i in range(1, parts)]
                try:
                    counts = [decode(0)] + [f.result() for f in later]
                except AudioError:
                    counts = []
            if len(counts) < parts or any(c < edges[i + 1] - edges[i] for i, c in enumerate(counts[:-1])):
                # A part failed or ended early (a truncated or damaged file): decode from the start
                # in one pass instead, which keeps everything up to the damage.
                return read_audio_mono(path, sample_rate, dtype=dtype, workers=1)
    got = edges[-2] + counts[-1]
    if got == 0:
        raise AudioError(f"{path}: decoding returned no samples; the file may be damaged")
    mono = mono[:got]
    if sample_rate is not None and sample_rate != sr:
        mono = resample(mono, sr, sample_rate)
        sr = sample_rate
    return mono.astype(dtype, copy=False), sr


def to_mono(data: np.ndarray) -> np.ndarray:
    """Mean over channels: ``(frames, channels)`` -> ``(frames,)``; 1-D input is returned as is,
    and one channel as a view of its column (no copy: an index re-score decodes hundreds of windows)."""
    data = np.asarray(data)
    if data.ndim == 1:
        return data
    if data.ndim == 2 and data.shape[1] == 1:
        return data[:, 0]
    if data.ndim == 2 and data.dtype in (np.float32, np.float64):  # (mean sums float16 in float32)
        # Column by column: numpy's mean along a short axis of interleaved frames runs ~10x
        # slower (6 ms for 7 s of 44.1-kHz stereo). Same additions in the same order, same result.
        out = data[:, 0].copy()
        for c in range(1, data.shape[1]):
            out += data[:, c]
        out /= data.shape[1]
        return out
    return data.mean(axis=1)


def resample(x: np.ndarray, sr_in: int, sr_out: int, *, quality: str = "HQ") -> np.ndarray:
    """Resample along axis 0 with soxr (``quality`` as soxr names it: 'QQ', 'LQ', 'MQ', 'HQ', 'VHQ')."""
    if sr_in == sr_out:
        return np.asarray(x)
    if sr_in <= 0 or sr_out <= 0:
        raise AudioError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    return soxr.resample(np.ascontiguousarray(as_float(x)), sr_in, sr_out, quality=quality)


def as_float(x) -> np.ndarray:
    """``x`` as an array: float32 and float64 as they are (float32 halves a long track's memory and
    soxr runs ~2x faster in it), anything else (integers, float16) converted to float64."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def audio_input(audio, sr, *, what: str = "audio") -> tuple[np.ndarray, int]:
    """A caller's samples and rate, checked: ``(n,)`` or ``(n, channels)`` floats and a positive
    whole number of Hz, with a clear :class:`AudioError` for anything else.

    Integer samples are PCM at full scale, scaled to [-1, 1) as soundfile reads them (int16
    by 2^15, uint8 about 128, ...), so they compare with the corpus's decoded files; float
    samples are returned as they are (not copied).
    """
    x = np.asarray(audio)
    if x.dtype.kind in "iu":
        bits = 8 * x.dtype.itemsize
        offset = 2.0 ** (bits - 1) if x.dtype.kind == "u" else 0.0
        x = ((x.astype(np.float64) - offset) / 2.0 ** (bits - 1)).astype(np.float32 if bits <= 16 else np.float64)
    elif x.dtype.kind != "f":
        raise AudioError(f"{what} must hold real numbers (float or integer PCM samples), not {x.dtype}")
    if x.ndim == 2 and x.shape[0] < x.shape[1] and x.shape[0] <= 16:
        raise AudioError(f"{what} has shape {x.shape}, which looks like (channels, samples); pass "
                         "(samples, channels), e.g. audio.T")
    if x.ndim not in (1, 2) or x.size == 0:
        raise AudioError(f"{what} must be (n,) or (n, channels) samples, got shape {x.shape}")
    return x, whole_hz(sr)


def whole_hz(sr) -> int:
    """A sample rate argument as an int, or :class:`AudioError` unless it is a positive whole number of Hz."""
    try:
        rate = float(sr)
    except (TypeError, ValueError):
        rate = float("nan")
    if not (np.isfinite(rate) and rate >= 1 and rate == int(rate)):
        raise AudioError(f"sample rate {sr!r} must be a positive whole number of Hz, e.g. 44100")
    return int(rate)


# Largest sample magnitude accepted (2^40, about 1.1e12). Audio is expected near +-1 (float)
# or as integer PCM; much beyond this, squared STFT magnitudes overflow float32 and every
# cost comes out NaN.
MAX_SAMPLE = 2.0 ** 40


def sample_problem(data: np.ndarray, *, locate: bool = True) -> str | None:
    """What is wrong with ``data``'s sample values (NaN/Inf, or beyond :data:`MAX_SAMPLE`), or None;
    ``locate`` counts the bad samples and names the first (off for a resampled chunk, whose
    frame numbers and counts are not the file's).

    Two passes (max and min, which NaN propagates through) and no temporary array.
    """
    if data.size == 0 or (data.max() <= MAX_SAMPLE and data.min() >= -MAX_SAMPLE):
        return None
    bad = ~np.isfinite(data)
    if bad.any():
        if not locate:
            return "holds NaN/Inf samples; repair or re-export it"
        first = int(np.argwhere(bad)[0][0])
        return f"holds {int(bad.sum())} NaN/Inf samples (first at frame {first}); repair or re-export it"
    peak = float(np.max(np.abs(data)))
    return (f"samples reach {peak:.3g}, far beyond full scale (audio is expected at about +-1, or as "
            f"integer PCM); rescale it, e.g. divide it by {peak:.3g}")


def check_samples(data: np.ndarray, what: str) -> None:
    """Raise :class:`AudioError` if ``data`` holds NaN or Inf samples or absurdly large ones."""
    problem = sample_problem(data)
    if problem is not None:
        raise AudioError(f"{what}: {problem}")


_WRITE_BLOCK = 1 << 16  # frames per libsndfile write call (see write_audio_atomic)


def write_audio_atomic(
    path: str | os.PathLike,
    data: np.ndarray,
    sample_rate: int,
    *,
    format: str | None = None,
    subtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    ``format``/``subtype`` default to what soundfile infers from the extension. With
    ``overwrite=False`` an existing file is never touched and :class:`AudioError` is raised.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise AudioError(f"{path}: already exists; choose another output or pass --force")
    if not path.parent.exists():
        raise AudioError(f"{path.parent}: output folder does not exist; create it first")
    if format is None:
        ext = path.suffix.lstrip(".").upper()
        format = {"AIF": "AIFF", "OGA": "OGG"}.get(ext, ext)
    data = np.asarray(data)
    channels = 1 if data.ndim == 1 else int(data.shape[1])
    try:
        with atomic_path(path) as tmp:
            with sf.SoundFile(tmp, "w", int(sample_rate), channels, subtype=subtype, format=format) as out:
                # In blocks: libsndfile 1.2's Ogg Vorbis encoder crashes the process (SIGSEGV) when
                # handed some two million frames or more in one call (a 5-minute 8-kHz file).
                for start in range(0, len(data), _WRITE_BLOCK):
                    out.write(data[start:start + _WRITE_BLOCK])
    except Exception as exc:
        raise AudioError(f"{path}: writing failed ({_short(exc)})") from None
    return path


def content_hash(path: str | os.PathLike, *, chunk_bytes: int = 1 << 20) -> str:
    """BLAKE2b-128 hex digest of a file's bytes (identifies unchanged files across builds)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return msg[0] if msg else type(exc).__name__
