"""Gaps: the missing intervals ``[start, end)`` of a recording, and the masks they define.

A gap is held in seconds (what users type) and converted to samples at whatever rate a
stage works at with :meth:`Gap.to_samples`, always by rounding to the nearest sample, so
every stage agrees on which samples are missing. Paper eq. 1: ``m_i = 0`` inside the gap,
1 outside.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from simdps.errors import GapError

__all__ = ["Gap", "parse_time", "parse_gap", "as_gap", "validate_gaps", "gap_mask"]


@dataclass(frozen=True, order=True)
class Gap:
    """A missing interval ``[start_s, end_s)`` in seconds."""

    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s

    def to_samples(self, sample_rate: int) -> tuple[int, int]:
        """``(start, end)`` sample indices at ``sample_rate`` (end exclusive)."""
        return int(round(self.start_s * sample_rate)), int(round(self.end_s * sample_rate))

    def __str__(self) -> str:
        return f"{_seconds(self.start_s)}:{_seconds(self.end_s)}"


def _seconds(t: float) -> str:
    """``t`` to the microsecond, without trailing zeros (``:g`` showed 30.00001 as 30)."""
    return f"{t:.6f}".rstrip("0").rstrip(".")


_TIME = re.compile(r"^\s*(?:(\d+):)?(\d+(?:\.\d*)?|\.\d+)\s*$")


def parse_time(text: str) -> float:
    """Seconds from ``"12.5"`` or ``"mm:ss.s"`` (e.g. ``"1:02.5"`` is 62.5 s)."""
    m = _TIME.match(str(text))
    if not m:
        raise GapError(f"cannot read {text!r} as a time; write seconds (12.5) or mm:ss.s (1:02.5)")
    minutes = int(m.group(1)) if m.group(1) else 0
    seconds = float(m.group(2))
    if m.group(1) and seconds >= 60:
        raise GapError(f"{text!r}: seconds must be below 60 in mm:ss.s")
    return minutes * 60.0 + seconds


def parse_gap(text: str) -> Gap:
    """A gap from ``"START:END"`` in seconds, ``"mm:ss.s-mm:ss.s"``, or ``"mm:ss.s:mm:ss.s"``."""
    text = str(text).strip()
    if text.startswith("-"):
        raise GapError(f"gap {text!r} starts before the recording: gap times count seconds from its start, "
                       "0 or more (12.5:14.5)")
    if "-" in text:
        parts = text.split("-")
    else:
        pieces = text.split(":")
        if len(pieces) == 2:
            parts = pieces
        elif len(pieces) == 4:
            parts = [":".join(pieces[:2]), ":".join(pieces[2:])]
        else:
            parts = []
    if len(parts) != 2:
        raise GapError(
            f"cannot read gap {text!r}; write START:END in seconds (12.5:14.5), "
            "or mm:ss.s-mm:ss.s (1:02.5-1:04.5)"
        )
    start, end = parse_time(parts[0]), parse_time(parts[1])
    if end <= start:
        raise GapError(f"gap {text!r} reads as {_seconds(start)} s to {_seconds(end)} s, which is empty or "
                       "reversed: a gap needs a START and a later END, START:END in seconds (60:62.5) or "
                       "mm:ss.s-mm:ss.s (1:00-1:02.5)")
    return Gap(start, end)


def as_gap(gap) -> Gap:
    """A :class:`Gap` from a Gap, a ``"START:END"`` string (:func:`parse_gap`), or a pair
    ``(start_s, end_s)`` of finite seconds; anything else is a clear :class:`GapError`."""
    if isinstance(gap, Gap):
        return gap
    if isinstance(gap, str):
        return parse_gap(gap)
    try:
        start_s, end_s = (float(v) for v in gap)
    except (TypeError, ValueError):  # not iterable, not numbers, or not exactly two of them
        raise GapError(f"cannot read gap {gap!r}; give (start_s, end_s) in seconds, or 'START:END'") from None
    return Gap(start_s, end_s)


def validate_gaps(gaps: Iterable[Gap], duration_s: float, *, what: str = "the track") -> list[Gap]:
    """Sorted gaps, checked to be non-empty, inside ``[0, duration_s]`` and non-overlapping."""
    gaps = list(gaps)
    for g in gaps:  # (before sorting: NaN does not order)
        if not (np.isfinite(g.start_s) and np.isfinite(g.end_s)):
            raise GapError(f"gap ({g.start_s}, {g.end_s}) must be finite numbers of seconds")
    gaps = sorted(gaps)
    if not gaps:
        raise GapError("no gap given; pass at least one --gap START:END")
    for g in gaps:
        if g.end_s <= g.start_s:
            raise GapError(f"gap {g} is empty: its end must come after its start")
        if g.start_s < 0 or g.end_s > duration_s + 1e-9:
            raise GapError(
                f"gap {g} lies outside {what}, which lasts {duration_s:.3f} s; "
                "choose a gap inside the recording"
            )
    for a, b in zip(gaps, gaps[1:]):
        if b.start_s < a.end_s:
            raise GapError(f"gaps {a} and {b} overlap; merge them into one gap")
    return gaps


def gap_mask(n: int, gaps: Sequence[tuple[int, int]]) -> np.ndarray:
    """Paper eq. 1 mask of length ``n``: ``False`` (m_i = 0) inside each ``[start, end)``, ``True`` outside."""
    m = np.ones(n, dtype=bool)
    for start, end in gaps:
        m[max(start, 0):min(end, n)] = False
    return m
