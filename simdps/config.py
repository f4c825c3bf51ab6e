"""Configuration shared across stages: typed dataclasses whose defaults are the paper's values.

Every artefact (index, checkpoint, restore report) stores the configuration that made it
as JSON next to it; :func:`to_dict` / :func:`from_dict` do the round trip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["SearchConfig", "to_dict", "from_dict"]


@dataclass(frozen=True)
class SearchConfig:
    """Similarity search features and cost (paper sec. 3.2 eq. 10, sec. 4.3)."""

    sample_rate: int = 12_000  # search rate (sec. 4.3)
    n_fft: int = 1024  # Hann window length and FFT size
    hop_length: int = 256  # frame hop, shared by STFT and chroma
    context_s: float = 3.0  # Lc, each side of the gap
    stft_ramp_s: float = 0.75  # w1: 1 at the gap edge -> 0 at 0.75 s
    chroma_ramp_s: float = 3.0  # w2: linear ramp over the whole context
    alpha_stft: float = 1.0  # a1
    alpha_chroma: float = 1.0  # a2
    coarse_hop: int = 1024  # Lh in samples at ``sample_rate`` (about 85 ms)
    # eq. 11 refinement: "context" compares refine_boundary_ms of aligned context each side
    # after least-squares gain matching; "eq11" is the paper's one-sample criterion verbatim.
    refine_mode: str = "context"
    refine_boundary_ms: float = 5.0

    @property
    def context_samples(self) -> int:
        return int(round(self.context_s * self.sample_rate))


def to_dict(cfg: Any) -> dict:
    """A dataclass as a JSON-ready dict."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict) -> T:
    """Build ``cls`` from a dict, rejecting unknown keys with a clear message."""
    from simdps.errors import SimDPSError

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SimDPSError(f"unknown {cls.__name__} settings: {sorted(unknown)}; known: {sorted(names)}")
    return cls(**data)
