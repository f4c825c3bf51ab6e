"""Restoration end to end (``simdps-restore``): retrieve a guide per gap, fill it, splice it back.

``from simdps.restore import restore`` gives :func:`restore`; the settings are
:class:`RestoreConfig`. One idea per module: ``samples`` (bit-exact I/O), ``trackview``
(the track as a method sees it), ``window`` (the model window and its resampling),
``guide`` (retrieval per gap), ``auto`` (w_guide from the match), ``lpc`` (Burg
extrapolation), ``splice`` (boundary treatment), ``fill`` (one gap by one method),
``model`` (checkpoint), ``report`` (JSON), ``pipeline`` (the run).

``from simdps import restore`` is this package (Python binds a package's submodule to its
name once imported), so the package itself is made callable: ``restore(track, gaps, ...)``
works whichever of the two imports a caller used.
"""

import sys
import types

from simdps.restore.config import METHODS, RestoreConfig
from simdps.restore.pipeline import restore

__all__ = ["restore", "RestoreConfig", "METHODS"]


class _CallableModule(types.ModuleType):
    """This package, callable as :func:`restore`."""

    def __call__(self, *args, **kwargs):
        return restore(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
