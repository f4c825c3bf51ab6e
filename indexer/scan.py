"""Walking a corpus folder: which files are audio, and which changed since the last build.

A file is a candidate when its extension is one libsndfile (through soundfile) decodes;
anything else (cover art, cue sheets, notes) is ignored quietly and only counted. A link
to an audio file whose target is gone is a candidate too, so that the build reports it as
failed rather than counting it with the cover art. Hidden
files and folders (a leading dot) and the index folder itself are skipped; linked folders
are followed (each real folder once). A file whose
size and modification time match its catalog row is unchanged without being read; a file
whose stat changed is hashed, and only a different content hash makes it new work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from simdps.errors import SimDPSError

__all__ = ["CorpusFile", "AUDIO_EXTENSIONS", "scan_corpus"]

# Extensions libsndfile reads (soundfile.available_formats()) plus their common aliases.
AUDIO_EXTENSIONS = frozenset({
    "wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "aifc", "au", "snd",
    "caf", "w64", "rf64", "htk", "ircam", "sf", "mat", "mat4", "mat5", "nist", "paf", "pvf",
    "sd2", "sds", "svx", "8svx", "voc", "wve", "xi", "avr", "mpc",
})


@dataclass(frozen=True)
class CorpusFile:
    """An audio file found under the corpus root."""

    rel_path: str  # '/'-separated, relative to the corpus root: the catalog key
    abs_path: str
    size_bytes: int
    mtime_ns: int


def scan_corpus(root: str | Path, *, exclude: list[str | Path] = ()) -> tuple[list[CorpusFile], int]:
    """Audio files under ``root`` (recursively, sorted by path) and the count of ignored files.

    ``exclude`` lists folders not to descend into (the index folder when it lies inside
    the corpus).
    """
    root = Path(root)
    if not root.is_dir():
        raise SimDPSError(f"{root}: corpus folder not found; pass a folder of audio files")
    root = root.resolve()
    skip = {Path(p).resolve() for p in exclude}
    found: list[CorpusFile] = []
    ignored = 0
    seen = {root}
    # Folder links are followed (archives are often assembled from links); `seen` stops cycles.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            real = (here / d).resolve()
            if d.startswith(".") or real in skip or real in seen:
                continue
            seen.add(real)
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            if name.rsplit(".", 1)[-1].lower() not in AUDIO_EXTENSIONS or "." not in name:
                ignored += 1
                continue
            try:
                st = path.stat()  # follows symlinks
            except OSError:
                try:  # a link to an audio file that is gone (an unmounted drive?): the build
                    st = path.lstat()  # records it as failed, with why, instead of ignoring it
                except OSError:
                    ignored += 1
                    continue
            found.append(CorpusFile(path.relative_to(root).as_posix(), str(path), st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f.rel_path)
    return found, ignored
