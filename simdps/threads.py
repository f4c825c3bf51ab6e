"""Threads: how many a parallel step uses by default, and BLAS held to one inside such steps."""

from __future__ import annotations

import os

__all__ = ["default_threads", "one_blas_thread"]


def default_threads(threads: int | None) -> int:
    """``threads`` if given (at least 1), else the CPU count, at most 4."""
    return max(1, threads if threads is not None else min(4, os.cpu_count() or 1))


class one_blas_thread:
    """Run small matrix products on one BLAS thread: a query is hundreds of tiny products, and
    OpenBLAS threads cost more than they give there (measured 2x on a shared 2-core machine).
    The loaded libraries are found once per process (a fresh scan cost ~4 ms a query)."""

    _controller = None

    def __enter__(self):
        self._limit = None
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn (librosa)
            return self
        if one_blas_thread._controller is None:
            one_blas_thread._controller = ThreadpoolController()
        self._limit = one_blas_thread._controller.limit(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._limit is not None:
            self._limit.restore_original_limits()
        return False
