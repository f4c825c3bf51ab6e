"""Choosing each gap's guide x~ (paper sec. 3.2) and reading it, channel by channel, at any rate.

Where the guide comes from:

* by default, the track itself (:func:`simdps.retrieval.track.search_track`: the track
  before and after the gap, exhaustive eq. 10 search, eq. 11 refinement);
* with ``--index DIR``, the indexed corpus (:meth:`simdps.Index.search`, which includes
  the track's own candidates);
* with ``--guide-audio FILE``, that one file only (another take of the same music),
  searched exhaustively like the track (:func:`search_guide_file`); ``FILE@START_S``
  fixes the position instead.

The search always runs on the mono mix of the track, so one guide position serves every
channel. The guide is then read per channel when its source has the track's channel
count (the track itself always does), otherwise the source's mono mix guides every
channel. Candidates that overlap another gap of the same track are skipped: their audio
is missing too. The query is the track with every gap zeroed (y = M x, eq. 1).
"""

from __future__ import annotations

import math
import os
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from simdps.audio import audio_info, check_samples, read_audio, to_mono
from simdps.config import SearchConfig
from simdps.errors import GapError, SimDPSError, collect_notes
from simdps.gaps import Gap
from simdps.restore.auto import null_cost
from simdps.restore.report import GuideRecord
from simdps.restore.trackview import TrackView
from simdps.retrieval.candidate import Candidate, resample_window

if TYPE_CHECKING:
    from simdps.retrieval.api import Index

__all__ = ["Guide", "GuideFinder", "search_guide_file", "parse_guide_audio"]


def parse_guide_audio(text: str | os.PathLike) -> tuple[Path, float | None]:
    """``FILE`` or ``FILE@START_S`` -> ``(path, start_s or None)``.

    A literal ``@`` in a file name is kept when the whole text names an existing file.
    """
    text = str(text)
    if "@" in text and not Path(text).exists():
        name, _, start = text.rpartition("@")
        try:
            start_s = float(start)
        except ValueError:
            raise SimDPSError(f"--guide-audio {text!r}: write FILE or FILE@START_S with START_S in seconds") from None
        if not math.isfinite(start_s) or start_s < 0:
            raise SimDPSError(f"--guide-audio {text!r}: START_S must be a time >= 0 in seconds")
        return Path(name), start_s
    return Path(text), None


@dataclass
class Guide:
    """One gap's chosen guide: the candidate, how to read it per channel, and its match ratio inputs."""

    candidate: Candidate
    record: GuideRecord
    null_cost: float | None  # J_0 of the gap's context (auto weighting), None if unknown
    channels: int  # channels of the restored track
    _read: Callable[[int, int, int], np.ndarray]  # (channel or -1 for mono, lo, hi) -> source samples
    _n_source: int
    _per_channel: bool

    def segment(self, first_out: int, n_out: int, sample_rate: int) -> np.ndarray:
        """``(n_out, channels)`` guide samples at ``sample_rate``, sample ``-first_out`` at the candidate start.

        Zero where the times fall outside the source (sec. 3.2: zero-padding as needed).
        """
        cand = self.candidate
        out = np.zeros((n_out, self.channels))
        for c in range(self.channels if self._per_channel else 1):
            ch = c if self._per_channel else -1
            out[:, c] = resample_window(lambda lo, hi, ch=ch: self._read(ch, lo, hi), self._n_source,
                                        cand.sample_rate, cand.start_sample, first_out, n_out, sample_rate)
        if not self._per_channel:
            out[:] = out[:, :1]
        return out


def _overlaps(start: int, stop: int, gaps: Sequence[tuple[int, int]]) -> bool:
    return any(start < g1 and g0 < stop for g0, g1 in gaps)


class GuideFinder:
    """Retrieves guides for the gaps of one track.

    Parameters
    ----------
    track : the track with every gap zeroed (a :class:`~simdps.restore.trackview.TrackView`
        without fills).
    path : the track's file name (recorded on candidates and in the report).
    index_dir : search this corpus index (a folder, or an open :class:`~simdps.retrieval.api.Index`)
        plus the track, instead of the track alone.
    guide_audio : search only this file, or take it at ``guide_start_s``.
    k, cfg : how many candidates to retrieve, and the search settings.
    """

    def __init__(self, track: TrackView, path: str, *,
                 index_dir: "str | os.PathLike | Index | None" = None, guide_audio: str | os.PathLike | None = None,
                 guide_start_s: float | None = None, k: int = 10, cfg: SearchConfig = SearchConfig()):
        self.track = track
        self.mono = track.mono()
        self.sample_rate = track.sample_rate
        self.path = str(path)
        self.gaps = list(track.gaps)
        self.k = int(k)
        self.cfg = cfg
        self.index = None
        self.notes: list[str] = []  # what the searches reported (e.g. indexed files left out), each once
        self.guide_path: Path | None = None
        self.guide_start_s = guide_start_s
        self._guide_data: tuple[np.ndarray, int] | None = None
        self._y12: np.ndarray | None = None
        self._s12: np.ndarray | None = None
        if guide_audio is not None:
            self.guide_path = Path(guide_audio)
            info = audio_info(self.guide_path)  # fails early on a missing or unreadable file
            if guide_start_s is not None and guide_start_s >= info.duration_s:
                raise SimDPSError(f"--guide-audio start {guide_start_s:g} s lies past the end of "
                                  f"{self.guide_path} ({info.duration_s:.3f} s)")
        elif index_dir is not None:
            from simdps.retrieval.api import Index

            # an open Index is reused as it is (a caller restoring many excerpts opens it once)
            self.index = index_dir if isinstance(index_dir, Index) else Index.open(index_dir)

    @property
    def source_name(self) -> str:
        if self.guide_path is not None:
            return "guide-audio"
        return "index" if self.index is not None else "track"

    # ------------------------------------------------------------------ search
    def candidates(self, gap_index: int) -> list[Candidate]:
        """Candidates for gap ``gap_index``, best first, none overlapping a gap of this track."""
        g0, g1 = self.gaps[gap_index]
        gap = Gap(g0 / self.sample_rate, g1 / self.sample_rate)
        if self.guide_path is not None:
            data, sr = self._guide()
            signals = dict(y12=self._search_signal(), s12=self._guide_search_signal())
            if self.guide_start_s is not None:
                return [fixed_candidate(self.mono, self.sample_rate, (g0, g1), data, sr,
                                        self.guide_start_s, str(self.guide_path), self.cfg, **signals)]
            return search_guide_file(self.mono, self.sample_rate, (g0, g1), data, sr, str(self.guide_path),
                                     k=self.k, cfg=self.cfg, **signals)
        k = self.k + len(self.gaps)  # room for the candidates skipped for overlapping other gaps
        if self.index is not None:
            with collect_notes() as notes:
                found = self.index.search(self.mono, self.sample_rate, gap=(gap.start_s, gap.end_s), k=k,
                                          path=self.path)
            self.notes += [n for n in notes if n not in self.notes]
        else:
            found = _search_track_or_none(self.mono, self.sample_rate, gap, k, self.cfg, self.path)
        keep = []
        for cand in found:
            if self._is_this_track(cand):
                start = int(round(cand.start_s * self.sample_rate))
                if _overlaps(start, start + (g1 - g0), self.gaps):
                    continue
            keep.append(cand)
        return keep[:self.k]

    def find(self, gap_index: int) -> Guide | None:
        """The best candidate for gap ``gap_index`` as a :class:`Guide`, or ``None`` if there is none."""
        found = self.candidates(gap_index)
        if not found:
            return None
        return self.guide_for(found[0], gap_index)

    def guide_for(self, cand: Candidate, gap_index: int) -> Guide:
        """Wrap ``cand`` with a per-channel reader and the gap's null cost J_0."""
        channels = self.track.channels
        if self._is_this_track(cand) and cand.sample_rate == self.sample_rate:
            track, mono = self.track, self.mono
            read = (lambda ch, lo, hi: track.read(lo, hi)[:, ch] if ch >= 0 else mono[lo:hi])
            n_source, per_channel = track.frames, True
        elif self.guide_path is not None and cand.path == str(self.guide_path):
            data, sr = self._guide()
            read = (lambda ch, lo, hi: data[lo:hi, ch] if ch >= 0 else to_mono(data[lo:hi]))
            n_source, per_channel = data.shape[0], data.shape[1] == channels
        else:
            info = audio_info(cand.path)
            path = cand.path

            def read(ch: int, lo: int, hi: int) -> np.ndarray:
                data, _ = read_audio(path, start=lo, stop=hi)
                return data[:, ch] if ch >= 0 else to_mono(data)

            n_source, per_channel = info.frames, info.channels == channels
        record = GuideRecord(
            source={"track": "track", "index": "index", "guide": "guide-audio"}.get(cand.source, cand.source),
            path=cand.path, start_s=float(cand.start_s), start_sample=int(cand.start_sample),
            sample_rate=int(cand.sample_rate), cost=_finite_or_none(cand.cost),
            cost_stft=_finite_or_none(cand.cost_stft), cost_chroma=_finite_or_none(cand.cost_chroma),
            channels="per-channel" if per_channel and channels > 1 else "mono",
            fixed=self.guide_start_s is not None and self.guide_path is not None,
        )
        return Guide(cand, record, self._null_cost(gap_index), channels, read, n_source, per_channel)

    # ------------------------------------------------------------------ helpers
    def _is_this_track(self, cand: Candidate) -> bool:
        if cand.source == "track":
            return True
        try:
            return Path(cand.path).resolve() == Path(self.path).resolve()
        except OSError:
            return False

    def _guide(self) -> tuple[np.ndarray, int]:
        if self._guide_data is None:
            data, sr = read_audio(self.guide_path)
            check_samples(data, str(self.guide_path))
            self._guide_data = (data, sr)
        return self._guide_data

    def _search_signal(self) -> np.ndarray:
        if self._y12 is None:
            from simdps.retrieval.features import search_signal

            self._y12 = search_signal(self.mono, self.sample_rate, self.cfg)
        return self._y12

    def _guide_search_signal(self) -> np.ndarray:
        if self._s12 is None:
            from simdps.retrieval.features import search_signal

            data, sr = self._guide()
            self._s12 = search_signal(data, sr, self.cfg)
        return self._s12

    def _null_cost(self, gap_index: int) -> float | None:
        try:
            query = _query(self._search_signal(), self.sample_rate, self.gaps[gap_index], self.cfg)
        except (GapError, ValueError):
            return None
        return null_cost(query, self.cfg.alpha_stft, self.cfg.alpha_chroma)


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _search_track_or_none(mono: np.ndarray, sr: int, gap: Gap, k: int, cfg: SearchConfig,
                          path: str) -> list[Candidate]:
    """Track search; an empty list when the track leaves no room for a candidate."""
    from simdps.retrieval.track import search_track

    try:
        return search_track(mono, sr, gap, k=k, cfg=cfg, path=path)
    except GapError as exc:
        if "no room" in str(exc) or "no context" in str(exc):
            return []
        raise


def _query(y12: np.ndarray, sr: int, gap: tuple[int, int], cfg: SearchConfig):
    """Eq. 10's query context for the gap ``[gap[0], gap[1])`` (track samples at ``sr``) of ``y12``."""
    from simdps.retrieval.cost import query_context

    rate = cfg.sample_rate
    gs = int(round(gap[0] * rate / sr))
    ge = min(int(round(gap[1] * rate / sr)), len(y12))
    if ge <= gs:
        raise GapError(f"a gap of {(gap[1] - gap[0]) / sr:.4f} s is shorter than one sample at {rate} Hz")
    return query_context(y12, gs, ge, cfg)


def search_guide_file(mono: np.ndarray, sr: int, gap: tuple[int, int], source: np.ndarray, source_sr: int,
                      source_path: str, *, k: int = 10, cfg: SearchConfig = SearchConfig(),
                      y12: np.ndarray | None = None, s12: np.ndarray | None = None) -> list[Candidate]:
    """Best ``k`` positions in one guide recording for the gap ``[gap[0], gap[1])`` of ``mono`` (track samples).

    The guide file is a one-file corpus: eq. 10 at every start on the frame grid of its
    12-kHz mono mix (:func:`~simdps.retrieval.cost.grid_costs`), the best ``k`` starts at
    least one analysis window apart, each refined to the sample at the file's own rate
    (eq. 11, :func:`~simdps.retrieval.refine.refine_start`) and re-scored there.
    ``y12`` / ``s12`` are the 12-kHz search signals of track and source, if already computed.
    """
    from simdps.retrieval.cost import costs_at, grid_costs
    from simdps.retrieval.features import search_signal
    from simdps.retrieval.refine import refine_start, refine_window

    query = _query(search_signal(mono, sr, cfg) if y12 is None else y12, sr, gap, cfg)
    src_mono = to_mono(np.asarray(source, dtype=np.float64))
    s12 = search_signal(src_mono, source_sr, cfg) if s12 is None else s12
    costs = grid_costs(query, s12, cfg)
    if len(costs) == 0:
        raise SimDPSError(
            f"{source_path} ({len(src_mono) / source_sr:.2f} s) is too short to hold a "
            f"{(gap[1] - gap[0]) / sr:.2f} s guide with its context; use a longer guide recording "
            "or fix its position with FILE@START_S"
        )
    rate = cfg.sample_rate
    taken: list[int] = []
    for i in np.argsort(costs.total, kind="stable"):
        if all(abs(int(costs.starts[i]) - int(costs.starts[t])) > cfg.n_fft for t in taken):
            taken.append(int(i))
            if len(taken) == k:
                break
    length = int(round((gap[1] - gap[0]) * source_sr / sr))
    starts: list[int] = []
    for i in taken:
        coarse = int(round(int(costs.starts[i]) * source_sr / rate))
        width, bounds = refine_window(coarse, (0, max(0, len(src_mono) - length)), source_sr, cfg)
        ref = refine_start(mono, sr, gap[0], gap[1], src_mono, source_sr, coarse, width, cfg, bounds=bounds)
        if ref.start_sample not in starts:
            starts.append(ref.start_sample)
    final = costs_at(query, s12, [int(round(t * rate / source_sr)) for t in starts], cfg)
    found = [Candidate(source_path, t / source_sr, t, source_sr, *astuple(final.parts(i)), source="guide")
             for i, t in enumerate(starts)]
    return sorted(found, key=lambda c: (c.cost, c.start_sample))


def fixed_candidate(mono: np.ndarray, sr: int, gap: tuple[int, int], source: np.ndarray, source_sr: int,
                    start_s: float, source_path: str, cfg: SearchConfig = SearchConfig(), *,
                    y12: np.ndarray | None = None, s12: np.ndarray | None = None) -> Candidate:
    """The guide at a user-given position ``start_s`` of ``source``, with its eq. 10 cost there."""
    from simdps.retrieval.cost import costs_at
    from simdps.retrieval.features import search_signal

    start = int(round(start_s * source_sr))
    try:
        query = _query(search_signal(mono, sr, cfg) if y12 is None else y12, sr, gap, cfg)
        if s12 is None:
            s12 = search_signal(to_mono(np.asarray(source, dtype=np.float64)), source_sr, cfg)
        parts = costs_at(query, s12, [int(round(start * cfg.sample_rate / source_sr))], cfg).parts(0)
        cost = astuple(parts)
    except (GapError, ValueError):
        cost = (math.nan, math.nan, math.nan)
    return Candidate(source_path, start / source_sr, start, source_sr, *cost, source="guide")
