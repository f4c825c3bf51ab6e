"""The JSON report of a restore run: what was done to each gap, and how to reproduce it."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simdps.atomic import write_text_atomic
from simdps.errors import SimDPSError

__all__ = ["GuideRecord", "GapRecord", "RunReport", "write_report"]


@dataclass
class GuideRecord:
    """Where a gap's guide x~ came from (paper eq. 9: the source s* and start t_hat*)."""

    source: str  # "track", "index" or "guide-audio"
    path: str
    start_s: float  # start of the guide segment in its source, seconds
    start_sample: int  # the same at ``sample_rate``
    sample_rate: int
    cost: float | None  # J of eq. 10 (None when --guide-audio FILE@START fixed it)
    cost_stft: float | None = None
    cost_chroma: float | None = None
    channels: str = "mono"  # "per-channel" when each channel is guided by its own source channel
    fixed: bool = False  # position given by the user, not searched


@dataclass
class GapRecord:
    """One gap restored by one method."""

    gap_start_s: float
    gap_end_s: float
    method: str
    guide: GuideRecord | None = None
    w_y: float | None = None
    w_guide: float | None = None
    match_ratio: float | None = None  # rho = J*/J_0 of --method auto
    seed: int | None = None
    window_start_s: float | None = None
    window_length_s: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class RunReport:
    """A whole run: inputs, outputs, model, settings and every gap's record."""

    input: str
    outputs: dict[str, str]  # method -> output file
    sample_rate: int
    channels: int
    subtype: str
    methods: list[str]
    device: str | None
    checkpoint: dict[str, Any] | None  # path, sha256, sample_rate, segment_length
    index: str | None
    guide_audio: str | None
    config: dict[str, Any]
    gaps: list[GapRecord] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what did not go as asked, e.g. methods skipped
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def write_report(report: RunReport, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write the report as indented JSON, atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise SimDPSError(f"{path}: already exists; choose another --report path or pass --force")
    if not path.parent.exists():
        raise SimDPSError(f"{path.parent}: report folder does not exist; create it first")
    return write_text_atomic(path, json.dumps(report.to_dict(), indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
