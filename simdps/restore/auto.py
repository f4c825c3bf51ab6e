"""``--method auto``: the guide weight w_guide chosen from how well the retrieved match fits.

The paper's listening test (sec. 5) found SimDPS-l (w_guide = 0.15) best when the similarity
search found a good or moderately good match, and no benefit over the weaker guide or plain
DPS when the match was poor. ``auto`` turns that into a monotone rule on the best
candidate's cost ``J*`` (eq. 10) measured against the context's own scale:

    rho = J* / J_0,        J_0 = J of the same context against silence (a candidate with no
                                  information: zero STFT and zero chroma features),
    w_guide = w_max * clip((rho_hi - rho) / (rho_hi - rho_lo), 0, 1).

``rho`` is 0 for an exact repetition and grows towards (and past) 1 as the candidate's
context shares less with the gap's. ``J_0`` makes the rule independent of how much chroma
energy a context carries and of how many context frames exist near a track edge, and needs
no other candidates. When no candidate is found at all, w_guide is 0 (plain DPS).

Calibration (within-track search, 36 random 2-s gaps in 12 pieces of the rendered piano
corpus): gaps whose best match was the same passage repeated scored rho = 0.33-0.48, all
others 0.72-1.08 (the median of the other nine candidates: 0.84-1.11). Hence
``rho_lo = 0.45`` (a repeat gets the full SimDPS-l weight), ``rho_hi = 0.9`` (a typical
non-repeat gets little or none), and a moderate match in between a proportionate weight;
``rho`` = 0.8 gives about 0.04, SimDPS-h's value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AutoWeightConfig", "auto_guide_weight", "null_cost"]


@dataclass(frozen=True)
class AutoWeightConfig:
    """Map from the match ratio ``rho = J*/J_0`` to w_guide (see the module docstring)."""

    w_max: float = 0.15  # SimDPS-l (sec. 4.2)
    rho_lo: float = 0.45  # rho at or below this: full SimDPS-l weight (a musical repeat)
    rho_hi: float = 0.9  # rho at or above this: no guide (plain DPS)


def auto_guide_weight(best_cost: float | None, null: float,
                      cfg: AutoWeightConfig = AutoWeightConfig()) -> tuple[float, float | None]:
    """``(w_guide, rho)`` for the best candidate's cost and the context's null cost ``J_0``.

    Monotone non-increasing in ``best_cost``; 0 when there is no candidate or the context
    is silent (``J_0`` = 0 carries no information to match).
    """
    if best_cost is None or not np.isfinite(best_cost) or not null > 0:
        return 0.0, None
    rho = float(best_cost) / float(null)
    t = (cfg.rho_hi - rho) / (cfg.rho_hi - cfg.rho_lo)
    return float(cfg.w_max * np.clip(t, 0.0, 1.0)), rho


def null_cost(query, alpha_stft: float = 1.0, alpha_chroma: float = 1.0) -> float:
    """``J_0``: eq. 10 between the query context and an all-zero candidate context.

    ``query`` is a :class:`simdps.retrieval.cost.QueryContext`; its weighted context blocks
    ``sqrt(w_j) Phi(y)_j`` give ``d_k^2 = sum ||block||^2`` against zero features.
    """
    sq_stft = float(np.sum(np.square(query.pre.stft, dtype=np.float64))
                    + np.sum(np.square(query.post.stft, dtype=np.float64)))
    sq_chroma = float(np.sum(np.square(query.pre.chroma, dtype=np.float64))
                      + np.sum(np.square(query.post.chroma, dtype=np.float64)))
    return alpha_stft * np.sqrt(sq_stft) + alpha_chroma * np.sqrt(sq_chroma)
