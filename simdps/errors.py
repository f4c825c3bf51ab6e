"""The one exception type users see.

Errors a user can cause (bad file, gap outside the track, missing index, missing
checkpoint) raise :class:`SimDPSError` with a message that says what to do. The
command-line tools print the message without a traceback and exit with status 2.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class SimDPSError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class AudioError(SimDPSError):
    """An audio file cannot be read or written, or holds invalid samples."""


class GapError(SimDPSError):
    """A gap is malformed, empty, overlapping another, or outside the track."""


class SimDPSWarning(UserWarning):
    """Something did not go quite as asked, but the result stands (e.g. indexed files that could
    not be read were left out of a search). The command-line tools print it as a note."""


@contextmanager
def collect_notes() -> Iterator[list[str]]:
    """Collect the messages of the :class:`SimDPSWarning` s raised inside (each once, in order);
    other warnings pass through as they would have."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SimDPSWarning)
        try:
            yield notes
        finally:
            others = []
            for w in caught:
                if issubclass(w.category, SimDPSWarning):
                    if str(w.message) not in notes:
                        notes.append(str(w.message))
                else:
                    others.append(w)
    for w in others:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
