"""Settings of a restore run: one typed dataclass, written into every run's JSON report."""

from __future__ import annotations

from dataclasses import dataclass, field

from simdps.config import SearchConfig
from simdps.errors import SimDPSError
from simdps.restore.auto import AutoWeightConfig
from simdps.restore.lpc import LPCConfig

__all__ = ["METHODS", "MODEL_METHODS", "GUIDED_METHODS", "RestoreConfig", "check_method"]

# The paper's conditions (sec. 5) plus ``auto``; ``all`` runs every one of them.
METHODS = ("lpc", "sim", "dps", "simdps-l", "simdps-h", "auto")
MODEL_METHODS = ("dps", "simdps-l", "simdps-h", "auto")  # need the diffusion model
GUIDED_METHODS = ("sim", "simdps-l", "simdps-h", "auto")  # need a retrieved guide


def check_method(method: str) -> tuple[str, ...]:
    """The methods one ``--method`` value runs (``all`` -> every method)."""
    key = method.lower()
    if key == "all":
        return METHODS
    if key not in METHODS:
        raise SimDPSError(f"unknown method {method!r}; choose one of {', '.join(METHODS + ('all',))}")
    return (key,)


@dataclass(frozen=True)
class RestoreConfig:
    """How each gap is filled. Defaults are the paper's values where it gives one.

    Parameters
    ----------
    steps : diffusion sampler steps (sec. 4.2: 50).
    seed : noise seed of the sampler (gap ``i`` uses ``seed + i``).
    k : candidates retrieved per gap.
    w_y : weight of the observed-context term of eq. 8 (sec. 4.2: 0.3).
    context_s : observed context kept on each side of the gap inside the model window.
    max_window_factor : longest model window, in training segments.
    mask_margin_s : the mask is widened by this on each side of a gap at the model rate.
    splice_fade_s : fade of the boundary residual added to the model output inside the gap.
    sim_fade_s : cross-fade of the Sim method at each gap edge (sec. 5: 10 ms).
    lpc : two-sided Burg extrapolation (the LPC method, and Sim's cross-fade partner).
    auto : w_guide map of ``--method auto``.
    search : similarity search features and cost (sec. 4.3).
    """

    steps: int = 50
    seed: int = 0
    k: int = 10
    w_y: float = 0.3
    context_s: float = 1.0
    max_window_factor: float = 2.0
    mask_margin_s: float = 5e-4
    splice_fade_s: float = 0.005
    sim_fade_s: float = 0.010
    lpc: LPCConfig = field(default_factory=LPCConfig)
    auto: AutoWeightConfig = field(default_factory=AutoWeightConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise SimDPSError(f"--steps must be at least 1, got {self.steps}")
        if self.k < 1:
            raise SimDPSError(f"k must be at least 1, got {self.k}")
        if self.context_s <= 0 or self.max_window_factor < 1:
            raise SimDPSError("context_s must be > 0 and max_window_factor >= 1")
