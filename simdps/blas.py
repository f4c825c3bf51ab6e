"""BLAS threads: many small matrix products, or products already spread over threads, run on one."""

from __future__ import annotations

__all__ = ["one_blas_thread"]


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
