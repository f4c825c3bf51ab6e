"""A retrieved candidate (eq. 9's ``s*, t_hat*``) and the extraction of its guide segment.

A :class:`Candidate` names where the segment that would fill a gap starts in its source
(file path, seconds and samples at the source's own rate), its cost ``J`` (eq. 10) with
the per-feature parts, and where it came from (``"track"``: the query's own track,
``"index"``: an indexed corpus, ``"guide"``: a user-supplied guide).

:meth:`Candidate.extract` returns the guide ``x_tilde`` at any sample rate, zero-padded
where it runs past the source's edges (sec. 3.2, "with zero-padding as needed"). Resampling
reads a margin around the segment and chooses the chunk's first sample so that the
segment start falls exactly on an output sample (:func:`resample_window`), so the guide
at another rate is the resampled source sample for sample, not a shifted copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from simdps.audio import audio_info, read_audio, resample, to_mono, whole_hz
from simdps.errors import AudioError, SimDPSError

__all__ = ["Candidate", "resample_window", "read_window", "check_k"]

_MARGIN_S = 0.02  # input margin around a resampled window: covers soxr's filter support


def check_k(k) -> int:
    """How many candidates a search returns, checked: a whole number, at least 1."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SimDPSError(f"k (how many candidates) must be a whole number, at least 1; got {k!r}")
    return int(k)


def _padded(x: np.ndarray, start: int, stop: int, dtype=np.float64) -> np.ndarray:
    """``x[start:stop]`` with zeros where the range leaves ``x``."""
    out = np.zeros(stop - start, dtype=dtype)
    lo, hi = max(start, 0), min(stop, len(x))
    if hi > lo:
        out[lo - start:hi - start] = x[lo:hi]
    return out


def read_window(read: Callable[[int, int], np.ndarray], n_source: int, start: int, stop: int,
                dtype=np.float64) -> np.ndarray:
    """Samples ``[start, stop)`` of a source of ``n_source`` samples, zero outside it.

    ``read(lo, hi)`` must return the source's samples ``[lo, hi)`` for ``0 <= lo < hi <= n_source``.
    """
    out = np.zeros(stop - start, dtype=dtype)
    lo, hi = max(start, 0), min(stop, n_source)
    if hi > lo:
        out[lo - start:hi - start] = read(lo, hi)
    return out


def resample_window(
    read: Callable[[int, int], np.ndarray] | np.ndarray,
    n_source: int | None,
    sr_in: int,
    anchor_sample: int,
    first_out: int,
    n_out: int,
    sr_out: int,
    dtype=np.float64,
) -> np.ndarray:
    """``n_out`` samples at ``sr_out`` at times ``anchor_sample/sr_in + (first_out + k)/sr_out``.

    Parameters
    ----------
    read : an array (the source itself) or ``read(lo, hi)`` returning source samples.
    n_source : source length in samples (ignored for an array).
    sr_in, sr_out : source and output rates.
    anchor_sample : source sample that output index ``-first_out`` lands on exactly.
    first_out, n_out : first output index (may be negative) and how many to return.
    dtype : float64, or float32 (soxr about twice as fast; what the index build uses).

    The source is zero outside ``[0, n_source)``; output samples whose time lies outside
    the source are exactly zero.
    """
    if isinstance(read, np.ndarray):
        array = np.asarray(read, dtype=np.float64)
        n_source = len(array)

        def read(lo: int, hi: int) -> np.ndarray:  # noqa: E306 - a closure over the array
            return array[lo:hi]

    assert n_source is not None
    if sr_in == sr_out:
        start = anchor_sample + first_out
        return read_window(read, n_source, start, start + n_out, dtype)
    g = math.gcd(int(sr_in), int(sr_out))
    step_in, step_out = sr_in // g, sr_out // g  # step_in input samples span step_out output samples
    # Start the chunk a whole number of steps before the anchor so the anchor is an output sample.
    first_in = math.floor(first_out * sr_in / sr_out)
    margin_steps = math.ceil((max(_MARGIN_S * sr_in, 16) - first_in) / step_in)
    lead_in = margin_steps * step_in
    chunk_start = anchor_sample - lead_in
    n_in = lead_in + math.ceil((first_out + n_out) * sr_in / sr_out) + int(math.ceil(_MARGIN_S * sr_in)) + step_in
    inside = 0 <= chunk_start and chunk_start + n_in <= n_source
    chunk = read(chunk_start, chunk_start + n_in) if inside else \
        read_window(read, n_source, chunk_start, chunk_start + n_in, dtype)
    out_full = resample(np.asarray(chunk, dtype=dtype), sr_in, sr_out)
    offset = margin_steps * step_out + first_out  # output index of requested sample 0
    if inside and offset >= 0 and offset + n_out <= len(out_full):
        return out_full[offset:offset + n_out]  # every output time lies inside the source
    out = _padded(out_full, offset, offset + n_out, dtype)
    # Zero the samples whose time lies outside the source (k-th time in input samples).
    t_in = anchor_sample + (first_out + np.arange(n_out)) * (sr_in / sr_out)
    out[(t_in < -1e-9) | (t_in > n_source - 1 + 1e-9)] = 0.0
    return out


@dataclass(frozen=True)
class Candidate:
    """Where a gap's replacement starts in its source, and how well its context matched.

    Attributes
    ----------
    path : the source file (``"<query>"`` or similar for in-memory audio).
    start_s, start_sample : start of the segment that fills the gap, in seconds and in
        samples at ``sample_rate`` (the source's own rate).
    cost, cost_stft, cost_chroma : ``J`` of eq. 10 and its parts ``a_1 d_1``, ``a_2 d_2``.
    source : ``"track"``, ``"index"`` or ``"guide"``.
    audio : mono source samples at ``sample_rate`` when the source is in memory (not part of
        equality or repr); ``None`` reads ``path`` with soundfile.
    source_frames : the source file's length in samples when it was searched (index
        candidates), so that :meth:`extract` notices a file changed since; ``None``: unchecked.
    """

    path: str
    start_s: float
    start_sample: int
    sample_rate: int
    cost: float
    cost_stft: float
    cost_chroma: float
    source: str = "track"
    audio: np.ndarray | None = field(default=None, repr=False, compare=False)
    source_frames: int | None = field(default=None, repr=False, compare=False)

    def extract(self, length_samples: int, sample_rate: int | None = None, *,
                margin_samples: int = 0) -> np.ndarray:
        """The guide segment as mono float32 at ``sample_rate`` (default: the source's rate).

        Returns ``length_samples + 2*margin_samples`` samples starting ``margin_samples``
        before the candidate's start, zero wherever they fall outside the source.
        """
        sr_out = self.sample_rate if sample_rate is None else whole_hz(sample_rate)
        if length_samples < 0 or margin_samples < 0:
            raise SimDPSError("length_samples and margin_samples must be non-negative")
        read, n_source = self._reader()
        out = resample_window(read, n_source, self.sample_rate, self.start_sample,
                              -margin_samples, length_samples + 2 * margin_samples, sr_out)
        return out.astype(np.float32)

    def _reader(self) -> tuple[Callable[[int, int], np.ndarray], int]:
        if self.audio is not None:
            audio = np.asarray(self.audio)
            mono = to_mono(audio) if audio.ndim == 2 else audio
            return (lambda lo, hi: np.asarray(mono[lo:hi], dtype=np.float64)), len(mono)
        info = audio_info(self.path)
        if info.sample_rate != self.sample_rate:
            raise AudioError(
                f"{self.path}: now has sample rate {info.sample_rate} Hz, but the candidate was found "
                f"at {self.sample_rate} Hz; the file changed since indexing, rebuild the index"
            )
        if self.source_frames is not None and info.frames != self.source_frames:
            raise AudioError(
                f"{self.path}: now holds {info.frames} samples, but {self.source_frames} when the candidate "
                "was found; the file changed since indexing, rebuild the index"
            )

        def read(lo: int, hi: int) -> np.ndarray:
            data, _ = read_audio(self.path, start=lo, stop=hi)
            return to_mono(data)

        return read, info.frames

    def to_json(self) -> dict[str, Any]:
        """JSON-ready description (no audio)."""
        return {
            "path": self.path,
            "start_s": float(self.start_s),
            "start_sample": int(self.start_sample),
            "sample_rate": int(self.sample_rate),
            "cost": float(self.cost),
            "cost_stft": float(self.cost_stft),
            "cost_chroma": float(self.cost_chroma),
            "source": self.source,  # "index" (a corpus file) or "track" (the query recording itself)
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: str = "index",
                  audio: np.ndarray | None = None) -> "Candidate":
        """Inverse of :meth:`to_json` (in-memory ``audio`` given separately; ``source`` where the
        description has none)."""
        return cls(str(data["path"]), float(data["start_s"]), int(data["start_sample"]),
                   int(data["sample_rate"]), float(data["cost"]), float(data["cost_stft"]),
                   float(data["cost_chroma"]), source=data.get("source", source), audio=audio)
