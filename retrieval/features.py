"""Search features of paper sec. 3.2 / 4.3: STFT magnitude (Phi_1) and chroma (Phi_2) frames.

Everything here runs at the search rate ``cfg.sample_rate`` (12 kHz) on mono float32.

Frames are *not* centred: frame ``f`` computed with ``phase`` covers samples
``[phase + f*hop, phase + f*hop + n_fft)``. The context of a gap is read on that grid:

* pre-context frame ``j`` (``j = 0`` touches the gap) of a gap starting at sample ``ts``
  covers ``[ts - n_fft - j*hop, ts - j*hop)``;
* post-context frame ``j`` of a gap ending at sample ``te`` (exclusive) covers
  ``[te + j*hop, te + j*hop + n_fft)``.

Per frame (Hann window ``n_fft``, FFT ``n_fft``, hop ``hop_length``; sec. 4.3):

* ``|X_f|`` (``n_fft//2 + 1`` bins) is the STFT magnitude;
* chroma ``C_f = B |X_f|^2`` with ``B = librosa.filters.chroma(sr, n_fft, tuning=0)``
  (12 bins), divided by its maximum (librosa's ``chroma_stft`` normalisation,
  ``norm=inf``; frames whose maximum is below float32 ``tiny`` are left as they are).
  Tuning is fixed at 0 so that query and corpus always share one filterbank.

The context weights (eq. 10, ``W_k = diag(w_k)``) are per frame:
``w_kj = max(0, 1 - j*hop / R_k)`` with ``R_1 = stft_ramp_s`` (0.75 s) and
``R_2 = chroma_ramp_s`` (3 s) in samples, for ``j = 0 .. Nc-1`` where
``Nc = (Lc - n_fft)//hop + 1`` counts the frames lying wholly inside the ``Lc`` = 3 s
context. With the paper's numbers the STFT uses 36 frames, the chroma 137.

One *context block* per side and feature (what eq. 10 compares):

* ``Phi_1`` side block = ``[sqrt(w_1j) |X_j|]_j / n_1``,
* ``Phi_2`` side block = ``[sqrt(w_2j) C_j]_j / n_2``,

with ``n_k = sqrt(sum_j w_kj ||F_j||^2)`` the side's weighted L2 norm of that feature
(floored: a side whose norm is below :data:`NORM_FLOOR` is silent and left as it is).
Scaling each side to unit weighted norm makes the STFT cost level invariant (the same
passage at another gain matches exactly) and puts both features on one scale
(``d_k`` lies in ``[0, 2*sqrt(2)]``), so ``a_1 = a_2 = 1`` weigh timbre and harmony
equally as the paper intends; without it the 137-frame chroma term would outweigh the
36-frame STFT term about tenfold. The chroma frames themselves are already level free.

so that ``||block(y) - block(s)||^2`` is exactly the weighted squared Euclidean distance
``sum_j w_kj ||Phi_k(y)_j - Phi_k(s)_j||^2`` of that side. ``d_k^2`` of eq. 10 is the
pre-side plus the post-side value. :func:`context_block` is the one definition used
both by the exact cost (``retrieval/cost.py``) and by the index embeddings.

Frames that fall outside the available audio (gaps near a track's edges) get weight 0,
for the query and for every candidate alike (:func:`trim_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft

from simdps.audio import as_float, resample, to_mono
from simdps.config import SearchConfig

__all__ = [
    "NORM_FLOOR",
    "Features",
    "ContextBlock",
    "search_signal",
    "frame_features",
    "chroma_basis",
    "use_chroma_basis",
    "n_frames",
    "context_frames",
    "context_weights",
    "trim_weights",
    "available_frames",
    "context_block",
    "pre_edge_frame",
    "post_edge_frame",
]

NORM_FLOOR = 1e-8  # weighted STFT norm below which a side counts as silent (not rescaled)

_CHUNK_FRAMES = 4096  # frames per FFT batch: bounds the temporary (chunk, n_fft) copy


@dataclass(frozen=True)
class Features:
    """Frame features of one signal: ``stft`` ``(T, n_fft//2+1)`` magnitudes, ``chroma`` ``(T, 12)``.

    Frame ``f`` covers samples ``[phase + f*hop, phase + f*hop + n_fft)``.
    """

    stft: np.ndarray
    chroma: np.ndarray
    phase: int = 0

    def __len__(self) -> int:
        return int(self.stft.shape[0])


@dataclass(frozen=True)
class ContextBlock:
    """One side's weighted, flattened feature vectors (``Phi_1`` and ``Phi_2`` of eq. 10)."""

    stft: np.ndarray
    chroma: np.ndarray


def search_signal(x: np.ndarray, sr: int, cfg: SearchConfig = SearchConfig()) -> np.ndarray:
    """Mono float32 at ``cfg.sample_rate`` from ``(n,)`` or ``(n, channels)`` audio at ``sr`` (sec. 4.3).

    float32 audio is resampled in float32 (as the index build does), anything else in float64."""
    mono = to_mono(as_float(x))
    return np.ascontiguousarray(resample(mono, int(sr), cfg.sample_rate), dtype=np.float32)


def n_frames(n_samples: int, cfg: SearchConfig = SearchConfig(), *, phase: int = 0) -> int:
    """How many whole frames of ``n_fft`` fit in ``n_samples`` starting at ``phase``."""
    usable = n_samples - phase - cfg.n_fft
    return 0 if usable < 0 else usable // cfg.hop_length + 1


@lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    # Periodic Hann, as librosa and torch.stft use it: the values of scipy.signal.get_window("hann",
    # n_fft), written out because importing scipy.signal costs ~0.7 s (a test checks them equal).
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


_CHROMA_BASES: dict[tuple[int, int], np.ndarray] = {}


def chroma_basis(sr: int, n_fft: int) -> np.ndarray:
    """The chroma filterbank ``B`` as ``(n_fft//2 + 1, 12)`` float32, so that ``chroma = power @ B``.

    librosa's (tuning fixed, see the module docstring), or the one an index was built with
    once :func:`use_chroma_basis` has installed it.
    """
    basis = _CHROMA_BASES.get((sr, n_fft))
    if basis is None:
        basis = _shipped_chroma_basis(sr, n_fft)
    if basis is None:
        import librosa.filters  # imported here: librosa (with scipy.signal) costs ~1 s to import

        basis = np.ascontiguousarray(librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0, n_chroma=12).T,
                                     dtype=np.float32)
    _CHROMA_BASES[(sr, n_fft)] = basis
    return basis


# librosa's filterbank for the paper's settings, saved once (a test checks it against librosa):
# importing librosa and building it take ~2 s, which every search without an index and every
# new index build would otherwise pay. Regenerate with
# np.save(path, librosa.filters.chroma(sr=12000, n_fft=1024, tuning=0.0, n_chroma=12).T.astype(np.float32))
_SHIPPED_CHROMA = {(12_000, 1024): "chroma_12000_1024.npy"}


def _shipped_chroma_basis(sr: int, n_fft: int) -> np.ndarray | None:
    name = _SHIPPED_CHROMA.get((sr, n_fft))
    if name is None:
        return None
    from importlib.resources import files

    with files("simdps").joinpath("assets", name).open("rb") as f:
        return np.ascontiguousarray(np.load(f, allow_pickle=False), dtype=np.float32)


def use_chroma_basis(sr: int, n_fft: int, basis: np.ndarray) -> None:
    """Make ``basis`` this process's chroma filterbank for ``(sr, n_fft)``.

    An index stores the filterbank its features were computed with; installing it when the
    index is opened keeps its queries on the same features even under another librosa
    version, and spares them librosa's import.
    """
    basis = np.ascontiguousarray(basis, dtype=np.float32)
    if basis.shape != (n_fft // 2 + 1, 12):
        raise ValueError(f"a chroma filterbank for n_fft={n_fft} has shape {(n_fft // 2 + 1, 12)}, got {basis.shape}")
    _CHROMA_BASES[(sr, n_fft)] = basis


def _chroma_from_power(power: np.ndarray, cfg: SearchConfig) -> np.ndarray:
    """Per-frame max-normalised chroma of ``power`` ``(T, bins)``, as librosa's ``chroma_stft``."""
    raw = power @ chroma_basis(cfg.sample_rate, cfg.n_fft)
    peak = raw.max(axis=1, keepdims=True)
    peak[peak < np.finfo(np.float32).tiny] = 1.0
    return raw / peak


def frame_features(x12k: np.ndarray, cfg: SearchConfig = SearchConfig(), *, phase: int = 0) -> Features:
    """STFT magnitudes and chroma of every whole frame of ``x12k`` (non-centred, see module doc).

    Parameters
    ----------
    x12k : 1-D signal at ``cfg.sample_rate``.
    phase : first sample of frame 0, ``0 <= phase < hop`` in normal use.

    Returns
    -------
    Features with float32 arrays of ``n_frames(len(x12k), cfg, phase=phase)`` rows.
    """
    x = np.ascontiguousarray(x12k, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"frame_features expects a 1-D signal, got shape {x.shape}")
    n_fft, hop = cfg.n_fft, cfg.hop_length
    n_bins = n_fft // 2 + 1
    count = n_frames(len(x), cfg, phase=phase)
    if count == 0:
        return Features(np.zeros((0, n_bins), np.float32), np.zeros((0, 12), np.float32), int(phase))
    frames = np.lib.stride_tricks.sliding_window_view(x[phase:], n_fft)[::hop][:count]
    window = _hann(n_fft)

    def batch(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        magnitude = np.abs(scipy.fft.rfft(rows * window, axis=1))
        return magnitude, _chroma_from_power(magnitude * magnitude, cfg)

    if count <= _CHUNK_FRAMES:  # one batch (a context, a re-score window): no copies into place
        return Features(*batch(frames), phase=int(phase))
    stft = np.zeros((count, n_bins), dtype=np.float32)
    chroma = np.zeros((count, 12), dtype=np.float32)
    for lo in range(0, count, _CHUNK_FRAMES):
        hi = min(lo + _CHUNK_FRAMES, count)
        stft[lo:hi], chroma[lo:hi] = batch(frames[lo:hi])
    return Features(stft=stft, chroma=chroma, phase=int(phase))


def context_frames(cfg: SearchConfig = SearchConfig()) -> int:
    """``Nc``: frames lying wholly inside the ``Lc`` context on one side."""
    return max(0, (cfg.context_samples - cfg.n_fft) // cfg.hop_length + 1)


def context_weights(cfg: SearchConfig = SearchConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Frame weights ``(w_1, w_2)`` of eq. 10, index ``j = 0`` at the gap edge, length ``Nc``.

    ``w_kj = max(0, 1 - j*hop / R_k)``: the STFT ramp ``R_1`` reaches 0 at
    ``stft_ramp_s`` (0.75 s), the chroma ramp ``R_2`` at ``chroma_ramp_s`` (3 s).
    """
    j = np.arange(context_frames(cfg), dtype=np.float64)
    offset_samples = j * cfg.hop_length
    ramps = (cfg.stft_ramp_s * cfg.sample_rate, cfg.chroma_ramp_s * cfg.sample_rate)
    w1, w2 = (np.clip(1.0 - offset_samples / ramp, 0.0, 1.0) for ramp in ramps)
    return w1, w2


def available_frames(n_context_samples: int, cfg: SearchConfig = SearchConfig()) -> int:
    """Context frames that fit in ``n_context_samples`` of audio beside a gap edge."""
    return n_frames(max(0, n_context_samples), cfg)


def trim_weights(weights: np.ndarray, n_available: int) -> np.ndarray:
    """``weights`` with frames ``j >= n_available`` (outside the audio) set to 0."""
    out = np.array(weights, dtype=np.float64, copy=True)
    out[max(0, n_available):] = 0.0
    return out


def pre_edge_frame(gap_start: int, cfg: SearchConfig = SearchConfig(), *, phase: int = 0) -> int:
    """Frame index (in features computed at ``phase``) of pre-context frame ``j = 0`` of a gap at ``gap_start``."""
    first = gap_start - cfg.n_fft - phase
    if first % cfg.hop_length:
        raise ValueError(f"gap start {gap_start} is off the frame grid of phase {phase}")
    return first // cfg.hop_length


def post_edge_frame(gap_end: int, cfg: SearchConfig = SearchConfig(), *, phase: int = 0) -> int:
    """Frame index (in features computed at ``phase``) of post-context frame ``j = 0`` of a gap ending at ``gap_end``."""
    first = gap_end - phase
    if first % cfg.hop_length:
        raise ValueError(f"gap end {gap_end} is off the frame grid of phase {phase}")
    return first // cfg.hop_length


def _used(weights: np.ndarray) -> int:
    nonzero = np.flatnonzero(np.asarray(weights) > 0)
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def context_block(
    features: Features,
    edge_frame: int,
    side: str,
    cfg: SearchConfig = SearchConfig(),
    *,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> ContextBlock:
    """Weighted, flattened ``Phi_1`` / ``Phi_2`` vectors of one context side (eq. 10).

    Parameters
    ----------
    features : frame features of the signal holding the context.
    edge_frame : index in ``features`` of context frame ``j = 0`` (see :func:`pre_edge_frame`,
        :func:`post_edge_frame`).
    side : ``"pre"`` (frame ``j`` is ``edge_frame - j``) or ``"post"`` (``edge_frame + j``).
    weights : ``(w_1, w_2)``; default :func:`context_weights`. Use the query's
        :func:`trim_weights` result for gaps near a track edge.

    Returns
    -------
    ContextBlock whose vectors have fixed lengths (frames with non-zero weight under the
    untrimmed ``cfg`` ramps, times 513 or 12 bins). Zero-weight frames are not read and
    contribute zeros, so they may lie outside ``features``. ``||a - b||^2`` of two blocks
    is the side's weighted squared distance ``sum_j w_kj ||Phi_k(a)_j - Phi_k(b)_j||^2``.
    """
    if side not in ("pre", "post"):
        raise ValueError(f"side must be 'pre' or 'post', got {side!r}")
    full = context_weights(cfg)
    w1, w2 = full if weights is None else weights
    step = -1 if side == "pre" else 1
    vectors = []
    for table, w, w_full in ((features.stft, w1, full[0]), (features.chroma, w2, full[1])):
        size = _used(w_full)
        w = np.asarray(w, dtype=np.float64)[:size]
        block = np.zeros((size, table.shape[1]), dtype=np.float64)
        used = _used(w)
        if used:
            idx = edge_frame + step * np.arange(used)
            if idx.min() < 0 or idx.max() >= len(features):
                raise ValueError(f"context frames {idx.min()}..{idx.max()} lie outside the "
                                 f"{len(features)} frames given")
            block[:used] = np.sqrt(w[:used, None]) * table[idx]
        vectors.append(block)
    out = []
    for block in vectors:
        norm = float(np.sqrt(np.sum(block**2)))
        if norm > NORM_FLOOR:
            block /= norm  # unit weighted L2 norm per side (level invariance, common scale)
        out.append(block.ravel())
    return ContextBlock(stft=out[0], chroma=out[1])
