"""Objective scores of a restored gap against the original (DESIGN.md sec. 6).

Every metric compares the restoration ``x_hat`` with the original ``x`` of the same
excerpt, both mono (multichannel input is mixed down with :func:`simdps.audio.to_mono`),
over the gap ``[g0, g1)`` in samples. With ``X_tf`` the STFT of ``x`` (Hann window of
``frame_s`` seconds rounded to a power of two, hop a quarter window) over the frames ``T``
centred at ``g0, g0 + hop, ...`` inside the gap (the signal counted as zero beyond its
ends), only the audio around the gap is analysed, whatever the excerpt's length:

* **Log-spectral distance** (dB, lower is better, 0 when identical)::

      LSD = 1/|T| sum_t sqrt( 1/F sum_f (10 log10(|X_tf|^2 + eps) - 10 log10(|Xh_tf|^2 + eps))^2 )

* **Log-mel L1** (dB, lower is better): with ``M = mel(|X|^2)`` (``n_mels`` bands)::

      MEL = 1/(|T| B) sum_{t,b} |10 log10(M_tb + eps) - 10 log10(Mh_tb + eps)|

* **Chroma similarity** (lower is worse, 1 when identical): the mean over ``T`` of the
  cosine between 12-bin chroma vectors ``c_t`` (librosa's chroma filter bank applied to
  ``|X|^2``, as ``chroma_stft`` does, tuning fixed at A440); a frame where both vectors
  are zero counts 1, one zero 0::

      CHROMA = 1/|T| sum_t <c_t, ch_t> / (||c_t|| ||ch_t||)

* **SNR** (dB, higher is better, +inf when identical; reported, not trusted for
  generative fills, which need not match the waveform)::

      SNR = 10 log10( sum_{n in gap} x_n^2 / sum_{n in gap} (x_n - xh_n)^2 )

* **Loudness difference** (LU = dB, signed, 0 ideal): ITU-R BS.1770 ungated loudness of
  the gap alone, ``L = -0.691 + 10 log10(mean(K(x_gap)^2))`` with ``K`` the K-weighting
  filter applied at 48 kHz, and ``dL = L(xh_gap) - L(x_gap)``. A gain ``g`` on the gap
  gives exactly ``20 log10 g``. Since the context is the original in both, this is also
  the change of the gap's loudness relative to its context.

* **Boundary spectral flux** at each edge ``e`` (start and end; dB, 0 ideal, positive
  means a more abrupt transition than the original). With a shorter STFT (``edge_frame_s``),
  log-compressed magnitudes ``Y_tf = ln(1 + gamma |X_tf|)`` (``gamma = flux_gamma``, the
  compression of onset-novelty curves, so a broadband click counts in every bin rather than
  hiding under a few loud partials) and ``flux_t = sum_f max(Y_tf - Y_{t-1,f}, 0)^2``, sum
  the flux over the frames of a hop grid through ``e`` whose centres lie within
  ``edge_window_s`` of ``e``::

      FLUX_e = 10 log10( (sum_t fluxh_t + eps) / (sum_t flux_t + eps) )

* **Boundary first-difference energy** at each edge (dB, 0 ideal, positive = a step or
  click the original does not have), over ``diff_window_s`` either side of ``e``::

      DIFF_e = 10 log10( (sum_{|n-e|<w} (xh_n - xh_{n-1})^2 + eps) / (sum_{|n-e|<w} (x_n - x_{n-1})^2 + eps) )

The note-level score (basic-pitch + mir_eval) lives in :mod:`simdps.evaluation.notes`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import librosa
import numpy as np
import scipy.signal

from simdps.audio import resample, to_mono
from simdps.errors import SimDPSError

__all__ = [
    "MetricConfig",
    "MetricInfo",
    "METRICS",
    "gap_metrics",
    "log_spectral_distance",
    "log_mel_l1",
    "chroma_similarity",
    "snr_db",
    "bs1770_loudness",
    "loudness_difference_db",
    "edge_flux_ratio_db",
    "edge_diff_energy_ratio_db",
]

# Power floor: -100 dB re full scale, so silent bins compare as equal rather than as -inf.
_EPS_POWER = 1e-10


@dataclass(frozen=True)
class MetricConfig:
    """Analysis settings of the objective metrics (times in seconds, at any sample rate)."""

    frame_s: float = 0.0464  # STFT window, rounded to a power of two (2048 at 44.1 kHz)
    n_mels: int = 128  # mel bands of the log-mel L1
    edge_frame_s: float = 0.0232  # shorter STFT for the boundary flux (1024 at 44.1 kHz)
    edge_window_s: float = 0.025  # frames within this distance of an edge enter its flux
    flux_gamma: float = 10.0  # log compression ln(1 + gamma |X|) before the flux
    diff_window_s: float = 0.001  # samples within this distance of an edge enter DIFF_e


@dataclass(frozen=True)
class MetricInfo:
    """How to read a metric: unit and which direction is better."""

    name: str
    unit: str
    better: Literal["lower", "higher", "zero"]
    title: str


METRICS: dict[str, MetricInfo] = {m.name: m for m in [
    MetricInfo("lsd_db", "dB", "lower", "log-spectral distance"),
    MetricInfo("mel_l1_db", "dB", "lower", "log-mel L1"),
    MetricInfo("chroma_sim", "", "higher", "chroma cosine similarity"),
    MetricInfo("snr_db", "dB", "higher", "SNR in the gap"),
    MetricInfo("loudness_diff_db", "LU", "zero", "loudness difference to the original gap"),
    MetricInfo("flux_start_db", "dB", "zero", "spectral flux at the gap start, re original"),
    MetricInfo("flux_end_db", "dB", "zero", "spectral flux at the gap end, re original"),
    MetricInfo("diff_start_db", "dB", "zero", "first-difference energy at the gap start, re original"),
    MetricInfo("diff_end_db", "dB", "zero", "first-difference energy at the gap end, re original"),
    MetricInfo("note_precision", "", "higher", "note precision in the gap (basic-pitch, mir_eval)"),
    MetricInfo("note_recall", "", "higher", "note recall in the gap (basic-pitch, mir_eval)"),
    MetricInfo("note_f1", "", "higher", "note onset F1 in the gap (basic-pitch, mir_eval)"),
]}


def gap_metrics(
    original: np.ndarray,
    restored: np.ndarray,
    sample_rate: int,
    gap: tuple[int, int],
    config: MetricConfig = MetricConfig(),
) -> dict[str, float]:
    """All signal-level metrics of the module docstring for one restoration.

    Parameters
    ----------
    original, restored : the excerpt, ``(frames,)`` or ``(frames, channels)``, same shape.
    sample_rate : Hz.
    gap : ``(start, end)`` sample indices of the gap in the excerpt, end exclusive.
    config : analysis settings.

    Returns
    -------
    dict metric name -> value, keys as in :data:`METRICS` (without the note metrics).
    """
    x, x_hat, (g0, g1) = _checked(original, restored, gap)
    n_fft = _frame_length(config.frame_s, sample_rate)
    power, power_hat = _gap_power(x, x_hat, g0, g1, n_fft)
    return {
        "lsd_db": _lsd(power, power_hat),
        "mel_l1_db": _mel_l1(power, power_hat, sample_rate, n_fft, config.n_mels),
        "chroma_sim": _chroma_cosine(power, power_hat, sample_rate, n_fft),
        "snr_db": snr_db(x, x_hat, sample_rate, (g0, g1)),
        "loudness_diff_db": loudness_difference_db(x, x_hat, sample_rate, (g0, g1)),
        "flux_start_db": edge_flux_ratio_db(x, x_hat, sample_rate, g0, config),
        "flux_end_db": edge_flux_ratio_db(x, x_hat, sample_rate, g1, config),
        "diff_start_db": edge_diff_energy_ratio_db(x, x_hat, sample_rate, g0, config),
        "diff_end_db": edge_diff_energy_ratio_db(x, x_hat, sample_rate, g1, config),
    }


# --- spectral distances inside the gap -------------------------------------------------

def log_spectral_distance(original, restored, sample_rate: int, gap: tuple[int, int],
                          config: MetricConfig = MetricConfig()) -> float:
    """LSD over the gap's frames, in dB (module docstring)."""
    x, x_hat, (g0, g1) = _checked(original, restored, gap)
    power, power_hat = _gap_power(x, x_hat, g0, g1, _frame_length(config.frame_s, sample_rate))
    return _lsd(power, power_hat)


def log_mel_l1(original, restored, sample_rate: int, gap: tuple[int, int],
               config: MetricConfig = MetricConfig()) -> float:
    """Mean absolute log-mel difference over the gap's frames, in dB (module docstring)."""
    x, x_hat, (g0, g1) = _checked(original, restored, gap)
    n_fft = _frame_length(config.frame_s, sample_rate)
    power, power_hat = _gap_power(x, x_hat, g0, g1, n_fft)
    return _mel_l1(power, power_hat, sample_rate, n_fft, config.n_mels)


def chroma_similarity(original, restored, sample_rate: int, gap: tuple[int, int],
                      config: MetricConfig = MetricConfig()) -> float:
    """Mean per-frame chroma cosine similarity over the gap (1 = same pitch classes)."""
    x, x_hat, (g0, g1) = _checked(original, restored, gap)
    n_fft = _frame_length(config.frame_s, sample_rate)
    power, power_hat = _gap_power(x, x_hat, g0, g1, n_fft)
    return _chroma_cosine(power, power_hat, sample_rate, n_fft)


def _lsd(power: np.ndarray, power_hat: np.ndarray) -> float:
    diff_db = 10.0 * (np.log10(power + _EPS_POWER) - np.log10(power_hat + _EPS_POWER))
    return float(np.mean(np.sqrt(np.mean(diff_db ** 2, axis=0))))


@functools.lru_cache(maxsize=16)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


@functools.lru_cache(maxsize=16)
def _chroma_basis(sample_rate: int, n_fft: int) -> np.ndarray:
    # What librosa.feature.chroma_stft applies to a power spectrogram (tuning fixed at A440).
    return librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0)


def _mel_l1(power, power_hat, sample_rate: int, n_fft: int, n_mels: int) -> float:
    mel_basis = _mel_basis(sample_rate, n_fft, n_mels)
    mel, mel_hat = mel_basis @ power, mel_basis @ power_hat
    return float(np.mean(np.abs(10.0 * (np.log10(mel + _EPS_POWER) - np.log10(mel_hat + _EPS_POWER)))))


def _chroma_cosine(power, power_hat, sample_rate: int, n_fft: int) -> float:
    # Unnormalised chroma keeps silent frames at zero so they can be recognised below.
    basis = _chroma_basis(sample_rate, n_fft)
    c, c_hat = basis @ power, basis @ power_hat
    norm, norm_hat = np.linalg.norm(c, axis=0), np.linalg.norm(c_hat, axis=0)
    tiny = 1e-12 * max(float(norm.max(initial=0.0)), float(norm_hat.max(initial=0.0)), 1e-30)
    both_zero = (norm <= tiny) & (norm_hat <= tiny)
    one_zero = (norm <= tiny) ^ (norm_hat <= tiny)
    cos = np.sum(c * c_hat, axis=0) / np.maximum(norm * norm_hat, 1e-300)
    cos = np.where(both_zero, 1.0, np.where(one_zero, 0.0, cos))
    return float(np.mean(np.clip(cos, -1.0, 1.0)))


def _frame_length(frame_s: float, sample_rate: int) -> int:
    """``frame_s`` at ``sample_rate`` rounded to the nearest power of two (at least 64)."""
    return int(2 ** max(6, round(math.log2(max(frame_s * sample_rate, 2.0)))))


def _local_stft(x: np.ndarray, centres: np.ndarray, n_fft: int) -> np.ndarray:
    """Hann STFT frames centred on ``centres`` (evenly spaced), zero beyond the signal's ends."""
    hop = int(centres[1] - centres[0]) if len(centres) > 1 else n_fft // 4
    lo = int(centres[0]) - n_fft // 2
    hi = lo + n_fft + hop * (len(centres) - 1)
    seg = np.zeros(hi - lo)
    a, b = max(lo, 0), min(hi, len(x))
    if b > a:
        seg[a - lo:b - lo] = x[a:b]
    return librosa.stft(seg, n_fft=n_fft, hop_length=hop, window="hann", center=False)


def _gap_power(x, x_hat, g0: int, g1: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrograms of both signals over the frames centred at ``g0, g0 + hop, ... < g1``."""
    hop = n_fft // 4
    centres = np.arange(g0, g1, hop)  # at least one frame: g1 > g0
    return np.abs(_local_stft(x, centres, n_fft)) ** 2, np.abs(_local_stft(x_hat, centres, n_fft)) ** 2


# --- waveform and level --------------------------------------------------------------

def snr_db(original, restored, sample_rate: int, gap: tuple[int, int]) -> float:
    """``10 log10(||x_gap||^2 / ||x_gap - xh_gap||^2)``; +inf when the gap is reproduced exactly."""
    x, x_hat, (g0, g1) = _checked(original, restored, gap)
    signal = float(np.sum(x[g0:g1] ** 2))
    error = float(np.sum((x[g0:g1] - x_hat[g0:g1]) ** 2))
    if error == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / error)


# ITU-R BS.1770-4 K-weighting at 48 kHz: stage 1 high shelf (head effects), stage 2 RLB high pass.
_K_SHELF_B = np.array([1.53512485958697, -2.69169618940638, 1.19839281085285])
_K_SHELF_A = np.array([1.0, -1.69065929318241, 0.73248077421585])
_K_HIGHPASS_B = np.array([1.0, -2.0, 1.0])
_K_HIGHPASS_A = np.array([1.0, -1.99004745483398, 0.99007225036621])
_K_RATE = 48_000


def bs1770_loudness(x: np.ndarray, sample_rate: int) -> float:
    """Ungated BS.1770 loudness of a mono signal in LKFS: ``-0.691 + 10 log10(mean(K(x)^2))``.

    The signal is resampled to 48 kHz (soxr) so the standard's K-filter coefficients apply
    as published; digital silence reads as -200.691 rather than -inf.
    """
    x48 = resample(np.asarray(x, dtype=np.float64), sample_rate, _K_RATE)
    y = scipy.signal.lfilter(_K_SHELF_B, _K_SHELF_A, x48)
    y = scipy.signal.lfilter(_K_HIGHPASS_B, _K_HIGHPASS_A, y)
    return -0.691 + 10.0 * math.log10(max(float(np.mean(y ** 2)), 1e-20))


def loudness_difference_db(original, restored, sample_rate: int, gap: tuple[int, int]) -> float:
    """``L(xh_gap) - L(x_gap)`` in LU (= dB): positive when the fill is louder than the original."""
    x, x_hat, (g0, g1) = _checked(original, restored, gap)
    return bs1770_loudness(x_hat[g0:g1], sample_rate) - bs1770_loudness(x[g0:g1], sample_rate)


# --- boundary smoothness -------------------------------------------------------------

def edge_flux_ratio_db(original, restored, sample_rate: int, edge: int,
                       config: MetricConfig = MetricConfig()) -> float:
    """Rectified spectral flux around sample ``edge``, restored re original, in dB (``FLUX_e``)."""
    x, x_hat = _checked_pair(original, restored)
    n_fft = _frame_length(config.edge_frame_s, sample_rate)
    hop = n_fft // 4
    # Frames on a grid through the edge, one more before the first scored one for its difference.
    reach = max(int(config.edge_window_s * sample_rate) // hop, 0)
    centres = edge + hop * np.arange(-reach - 1, reach + 1)
    mag = np.log1p(config.flux_gamma * np.abs(_local_stft(x, centres, n_fft)))
    mag_hat = np.log1p(config.flux_gamma * np.abs(_local_stft(x_hat, centres, n_fft)))
    # flux_t compares frame t with t-1, so it is placed at frame t's centre (all within reach).
    flux = np.sum(np.maximum(np.diff(mag, axis=1), 0.0) ** 2, axis=0)
    flux_hat = np.sum(np.maximum(np.diff(mag_hat, axis=1), 0.0) ** 2, axis=0)
    eps = 1e-12
    return 10.0 * math.log10((float(flux_hat.sum()) + eps) / (float(flux.sum()) + eps))


def edge_diff_energy_ratio_db(original, restored, sample_rate: int, edge: int,
                              config: MetricConfig = MetricConfig()) -> float:
    """First-difference energy around sample ``edge``, restored re original, in dB (``DIFF_e``)."""
    x, x_hat = _checked_pair(original, restored)
    w = max(1, int(round(config.diff_window_s * sample_rate)))
    lo, hi = max(1, edge - w), min(len(x), edge + w)
    # x_n - x_{n-1} for n in [lo, hi): a step or click at the edge dominates this sum.
    energy = float(np.sum(np.diff(x[lo - 1:hi]) ** 2))
    energy_hat = float(np.sum(np.diff(x_hat[lo - 1:hi]) ** 2))
    return 10.0 * math.log10((energy_hat + _EPS_POWER) / (energy + _EPS_POWER))


# --- input checks -------------------------------------------------------------------

def _checked_pair(original, restored) -> tuple[np.ndarray, np.ndarray]:
    x = to_mono(np.asarray(original, dtype=np.float64))
    x_hat = to_mono(np.asarray(restored, dtype=np.float64))
    if x.shape != x_hat.shape:
        raise SimDPSError(
            f"original and restoration differ in length ({x.shape[0]} vs {x_hat.shape[0]} samples); "
            "score a restoration of the same excerpt"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(x_hat))):
        raise SimDPSError("original or restoration holds NaN/Inf samples; they cannot be scored")
    return x, x_hat


def _checked(original, restored, gap) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    x, x_hat = _checked_pair(original, restored)
    g0, g1 = int(gap[0]), int(gap[1])
    if not 0 <= g0 < g1 <= len(x):
        raise SimDPSError(f"gap [{g0}, {g1}) is not inside the {len(x)}-sample excerpt")
    return x, x_hat, (g0, g1)
