"""The one exception type users see.

Errors a user can cause (bad file, gap outside the track, missing index, missing
checkpoint) raise :class:`SimDPSError` with a message that says what to do. The
command-line tools print the message without a traceback and exit with status 2.
"""


class SimDPSError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class AudioError(SimDPSError):
    """An audio file cannot be read or written, or holds invalid samples."""


class GapError(SimDPSError):
    """A gap is malformed, empty, overlapping another, or outside the track."""
