"""Bit-exact sample I/O for restoration: the file's own integers stay the file's own integers.

A restored file must equal its input everywhere outside the gaps. Reading PCM as float and
writing the float back usually reproduces the integers, but that depends on libsndfile's
float<->int scaling and clipping conventions. We avoid depending on it: PCM subtypes are
read as left-justified ``int32`` (libsndfile shifts a 16-bit sample ``<< 16``, a 24-bit one
``<< 8``), the untouched samples are written back as those same ``int32`` values, and only
the samples inside the gaps are quantised from float, at the file's own bit depth. Float
files are read and written in their own precision (``float32`` for FLOAT, ``float64`` for
DOUBLE). Lossy codecs (MP3, Vorbis, Opus, ADPCM, GSM) cannot be bit-exact: they re-encode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simdps.audio import AudioInfo, audio_info, check_samples, read_audio, write_audio_atomic
from simdps.errors import AudioError

__all__ = [
    "NativeAudio",
    "pcm_bits",
    "read_native",
    "to_float",
    "from_float",
    "write_native",
    "output_format",
]

# Subtypes stored as integers of a fixed width: the bit depth we quantise gap samples to.
_PCM_BITS = {
    "PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32,
    # mu-law and A-law decode to 16-bit integers; re-encoding a decoded sample gives the same
    # sample (mu-law's two codes for zero may swap, both decode to 0).
    "ULAW": 16, "ALAW": 16,
}
_FLOAT_DTYPES = {"FLOAT": np.float32, "DOUBLE": np.float64}
_INT32_FULL_SCALE = 2.0 ** 31


def pcm_bits(subtype: str) -> int | None:
    """Bit depth of an integer PCM ``subtype`` (16 for 'PCM_16'), ``None`` for float or lossy ones."""
    return _PCM_BITS.get(subtype)


def is_lossless(subtype: str) -> bool:
    """True when writing the decoded samples back reproduces them exactly."""
    return subtype in _PCM_BITS or subtype in _FLOAT_DTYPES


@dataclass
class NativeAudio:
    """A whole file's samples in the dtype that round-trips them exactly.

    ``data`` is ``(frames, channels)``: ``int32`` (left-justified) for integer PCM,
    ``float32``/``float64`` for FLOAT/DOUBLE, ``float64`` for lossy codecs.
    """

    data: np.ndarray
    info: AudioInfo

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def channels(self) -> int:
        return self.info.channels

    @property
    def frames(self) -> int:
        return self.data.shape[0]


def read_native(path: str | os.PathLike) -> NativeAudio:
    """Decode ``path`` whole, in the exact dtype, and reject NaN/Inf samples.

    Raises
    ------
    AudioError
        If the file cannot be read or holds non-finite samples.
    """
    info = audio_info(path)
    if info.subtype in _PCM_BITS:
        dtype = "int32"
    elif info.subtype in _FLOAT_DTYPES:
        dtype = np.dtype(_FLOAT_DTYPES[info.subtype]).name
    else:
        dtype = "float64"
    data, _ = read_audio(path, dtype=dtype)
    if data.dtype.kind == "f":
        check_samples(data, str(path))
    return NativeAudio(np.ascontiguousarray(data), info)


def to_float(data: np.ndarray) -> np.ndarray:
    """Native samples -> float64 in [-1, 1) (int32 full scale is 2**31)."""
    if data.dtype == np.int32:
        return data.astype(np.float64) / _INT32_FULL_SCALE
    return data.astype(np.float64)


def from_float(x: np.ndarray, like: np.ndarray, subtype: str) -> np.ndarray:
    """Float64 samples -> the native dtype of ``like``, quantised to ``subtype``'s bit depth.

    Integer PCM: round to the nearest step of the file's bit depth, clip to its range, and
    left-justify in ``int32`` as libsndfile expects (no dither: the gap fill is new audio
    whose rounding error sits ~96 dB (16 bit) below full scale).
    """
    x = np.asarray(x, dtype=np.float64)
    if like.dtype == np.int32:
        bits = _PCM_BITS.get(subtype, 32)
        full = 2.0 ** (bits - 1)
        q = np.clip(np.rint(x * full), -full, full - 1).astype(np.int64)
        return (q << (32 - bits)).astype(np.int32)
    return x.astype(like.dtype)


def output_format(output: Path, info: AudioInfo) -> tuple[str, str]:
    """``(format, subtype)`` to write ``output`` with: the input's, unless the extension asks otherwise.

    A different extension keeps the input's subtype when that container accepts it.
    """
    import soundfile as sf

    ext = output.suffix.lstrip(".").upper()
    fmt = {"AIF": "AIFF", "OGA": "OGG"}.get(ext, ext)
    if fmt == info.format or (fmt == "WAV" and info.format in ("WAVEX", "RF64")):
        return info.format, info.subtype
    if fmt not in sf.available_formats():
        raise AudioError(
            f"{output}: unknown output extension {output.suffix!r}; "
            f"use the input's extension (.{info.format.lower()}) or another format soundfile writes"
        )
    if not sf.check_format(fmt, info.subtype):
        raise AudioError(
            f"{output}: a {fmt} file cannot hold the input's {info.subtype} samples; "
            f"use the input's extension (.{info.format.lower()}) to keep them bit-exact"
        )
    return fmt, info.subtype


def write_native(path: Path, data: np.ndarray, info: AudioInfo, *, overwrite: bool = False) -> Path:
    """Write native samples atomically with the input's rate and subtype (see :func:`output_format`)."""
    fmt, subtype = output_format(Path(path), info)
    return write_audio_atomic(path, data, info.sample_rate, format=fmt, subtype=subtype,
                              overwrite=overwrite)
