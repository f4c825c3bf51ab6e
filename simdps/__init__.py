"""SimDPS: Similarity-Guided Diffusion Posterior Sampling for long-gap music inpainting.

Public API (imported lazily so ``import simdps`` stays cheap)::

    from simdps import Index, Gap, SimDPSError, IndexConfig, SearchParams
    Index.open("corpus.index").search(audio, sr, gap=(12.5, 14.5), k=10)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from simdps.errors import AudioError, GapError, SimDPSError, SimDPSWarning
from simdps.gaps import Gap, parse_gap

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562).
_LAZY = {
    "Index": "simdps.retrieval.api",
    "Candidate": "simdps.retrieval.candidate",
    "search_track": "simdps.retrieval.track",
    "restore": "simdps.restore",
    "SearchConfig": "simdps.config",
    "IndexConfig": "simdps.indexer.config",
    "SearchParams": "simdps.retrieval.index_search",
}

__all__ = ["AudioError", "Gap", "GapError", "SimDPSError", "SimDPSWarning", "parse_gap", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simdps' has no attribute {name!r}")
