"""webMUSHRA export: the listening test of the paper (sec. 5) for the evaluated excerpts.

webMUSHRA (Schoeffler et al., ref. [31]) reads a YAML file from its ``configs/`` folder
and plays WAV files by paths relative to its root. This module writes

    <folder>/configs/<test_id>.yaml
    <folder>/configs/resources/audio/<test_id>/<excerpt_id>/reference.wav, <method>.wav, ...
    <folder>/README.md                                      how to run it

so copying ``<folder>/configs`` into a webMUSHRA checkout and opening
``index.html?config=<test_id>.yaml`` runs the test. Each excerpt is one ``mushra`` page
(``pages_per_excerpt`` pages when repeated, as the paper did to check consistency) with
the original as ``reference``; webMUSHRA itself adds the reference again, unlabelled, as
the hidden reference among the rated conditions (MushraAudioControl appends it), so it
is not listed twice. LPC is the low anchor (paper sec. 5), webMUSHRA's own low-pass
anchors are switched off, and every method is a condition keyed by its name (the key is
what webMUSHRA's results record).

webMUSHRA rejects a page whose stimuli differ in sample rate, length or channel count, or
whose rate differs from the browser's audio device, and allows at most 12 conditions.
So all stimuli are resampled (soxr) to ``sample_rate`` (48 kHz, the usual device rate),
written as 16-bit WAV, and each page's stimuli share one gain that keeps the loudest
below full scale, so relative levels are those of the evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import yaml

from simdps.audio import read_audio, resample, write_audio_atomic
from simdps.errors import SimDPSError
from simdps.atomic import write_text_atomic

__all__ = ["MushraConfig", "MushraItem", "write_webmushra", "MAX_CONDITIONS"]

MAX_CONDITIONS = 12  # webMUSHRA's MushraValidator.checkNumConditions


@dataclass(frozen=True)
class MushraConfig:
    """What the exported test looks like."""

    test_id: str = "simdps_eval"
    testname: str = "SimDPS: plausibility of restored gaps"
    sample_rate: int = 48_000  # must equal the listeners' audio device rate
    pages_per_excerpt: int = 1  # the paper presented each excerpt on two pages
    randomize_pages: bool = True  # webMUSHRA's "random" page group
    anchor: str = "lpc"  # the low anchor (paper sec. 5)
    peak_dbfs: float = -1.0  # loudest sample of a page after its shared gain


@dataclass(frozen=True)
class MushraItem:
    """One excerpt: the original and one restored file per method (any rate, same length)."""

    excerpt_id: str
    original: Path
    restorations: Mapping[str, Path]  # method -> restored excerpt
    gap_start_s: float  # in the excerpt, for the page text
    gap_end_s: float


def write_webmushra(folder: str | os.PathLike, items: Sequence[MushraItem], methods: Sequence[str],
                    config: MushraConfig = MushraConfig()) -> Path:
    """Write the config, stimuli and README under ``folder``; returns the YAML's path."""
    if not items:
        raise SimDPSError("no restored excerpts to put in a listening test")
    if config.anchor not in methods:
        raise SimDPSError(f"the listening test needs {config.anchor!r} as its low anchor; add it to --methods")
    if len(methods) > MAX_CONDITIONS:
        raise SimDPSError(f"webMUSHRA allows at most {MAX_CONDITIONS} conditions per page, got {len(methods)}")
    if not config.test_id.replace("_", "").replace("-", "").isalnum():
        raise SimDPSError(f"test id {config.test_id!r}: use letters, digits, '-' and '_' only")
    folder = Path(folder)
    audio_rel = Path("configs") / "resources" / "audio" / config.test_id
    (folder / audio_rel).mkdir(parents=True, exist_ok=True)

    pages = []
    for item in items:
        missing = [m for m in methods if m not in item.restorations]
        if missing:
            raise SimDPSError(f"excerpt {item.excerpt_id}: no restoration by {', '.join(missing)}")
        rel = audio_rel / item.excerpt_id
        (folder / rel).mkdir(exist_ok=True)
        sources = {"reference": item.original, **{m: item.restorations[m] for m in methods}}
        _write_page_stimuli(folder / rel, sources, config)
        for rep in range(config.pages_per_excerpt):
            suffix = f"_p{rep + 1}" if config.pages_per_excerpt > 1 else ""
            pages.append({
                "type": "mushra",
                "id": f"{item.excerpt_id}{suffix}",
                "name": f"Excerpt {item.excerpt_id}",
                "content": (
                    f"The stretch from {item.gap_start_s:.1f} s to {item.gap_end_s:.1f} s of each version "
                    "was reconstructed. Rate how plausible each version sounds (0-100), "
                    "compared with the reference."
                ),
                "showWaveform": True,
                "enableLooping": True,
                "reference": (rel / "reference.wav").as_posix(),
                "createAnchor35": False,
                "createAnchor70": False,
                "stimuli": {m: (rel / f"{m}.wav").as_posix() for m in methods},
            })

    doc = {
        "testname": config.testname,
        "testId": config.test_id,
        "bufferSize": 2048,
        "stopOnErrors": True,
        "showButtonPreviousPage": True,
        "remoteService": "service/write.php",
        "pages": [
            {"type": "generic", "id": "intro", "name": "Instructions",
             "content": ("Each page plays a short music excerpt whose middle part was lost and then "
                         "reconstructed in several ways. One of the versions is the unaltered original. "
                         "Rate the plausibility of every version from 0 (bad) to 100 (excellent).")},
            # A nested list headed "random" is shown in a new random order to each listener.
            *([["random", *pages]] if config.randomize_pages else pages),
            {"type": "finish", "name": "Thank you", "content": "Thank you for taking part.",
             "showResults": False, "writeResults": True},
        ],
    }
    yaml_path = folder / "configs" / f"{config.test_id}.yaml"
    write_text_atomic(yaml_path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))
    write_text_atomic(folder / "README.md", _readme(config, len(items), methods))
    return yaml_path


def _write_page_stimuli(folder: Path, sources: Mapping[str, Path], config: MushraConfig) -> None:
    """Resample every stimulus of a page to the test rate and give them one shared gain."""
    signals = {}
    for name, path in sources.items():
        data, sr = read_audio(path)
        signals[name] = resample(data, sr, config.sample_rate)
    shapes = {s.shape for s in signals.values()}
    if len(shapes) != 1:
        raise SimDPSError(
            f"{folder.name}: stimuli differ in length or channels ({sorted(shapes)}); "
            "webMUSHRA needs them identical"
        )
    peak = max(float(np.max(np.abs(s))) for s in signals.values())
    limit = 10 ** (config.peak_dbfs / 20)
    gain = min(1.0, limit / peak) if peak > 0 else 1.0  # only ever turned down, never up
    for name, signal in signals.items():
        write_audio_atomic(folder / f"{name}.wav", signal * gain, config.sample_rate,
                           subtype="PCM_16", overwrite=True)


def _readme(config: MushraConfig, n_items: int, methods: Sequence[str]) -> str:
    return f"""# webMUSHRA listening test: {config.testname}

{n_items} excerpts x {config.pages_per_excerpt} page(s); conditions: {', '.join(methods)}
(+ the hidden reference, which webMUSHRA adds itself). Low anchor: {config.anchor}.
Stimuli are {config.sample_rate} Hz 16-bit WAV.

1. Copy the `configs/` folder here into the root of a webMUSHRA checkout
   (audiolabs/webMUSHRA), merging it with the one there.
2. Serve that folder with PHP (for `service/write.php`, which stores the results) and open
   `index.html?config={config.test_id}.yaml`.
3. The listeners' audio device must run at {config.sample_rate} Hz, or webMUSHRA reports
   a sample-rate error; export again with another rate if it does not.
"""
