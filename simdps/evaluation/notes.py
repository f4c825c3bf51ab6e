"""Note-level score in the gap: basic-pitch transcribes, mir_eval matches (optional extra).

Both the original excerpt and the restoration are transcribed whole with basic-pitch
(Bittner et al., ICASSP 2022; its ONNX model ships inside the package and runs on
onnxruntime, offline). The notes whose onsets fall inside the gap ``[gap_start_s,
gap_end_s)`` are compared with ``mir_eval.transcription.precision_recall_f1_overlap``
(onset within ``onset_tolerance_s`` = 50 ms, pitch within 50 cents, offsets ignored):

    precision = |matched| / |restored notes|,  recall = |matched| / |original notes|,
    F1 = 2 P R / (P + R).

An empty side is scored by the definitions, not left undefined: no notes in either gap
gives P = R = F1 = 1 (nothing to find and nothing invented); notes only in the original
give R = 0, P = 1, F1 = 0; notes only in the restoration give P = 0, R = 1, F1 = 0.

The packages are not dependencies of SimDPS. Install them with the ``eval-notes`` extra
plus basic-pitch itself, which must come without its declared dependencies (they pull
TensorFlow)::

    pip install -e ".[eval-notes]" && pip install --no-deps basic-pitch==0.4.0

When they are missing, :func:`notes_unavailable_reason` says so and the evaluation reports
the note metrics as missing (NaN) with that note.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from simdps.audio import to_mono
from simdps.errors import SimDPSError

__all__ = ["NoteConfig", "NoteTranscriber", "notes_unavailable_reason", "note_scores", "missing_note_scores",
           "INSTALL_HINT"]

INSTALL_HINT = ("pip install onnxruntime pretty_midi mir_eval resampy==0.4.3 && "
                "pip install --no-deps basic-pitch==0.4.0")


@dataclass(frozen=True)
class NoteConfig:
    """basic-pitch thresholds (its own defaults) and the mir_eval matching tolerances."""

    onset_threshold: float = 0.5
    frame_threshold: float = 0.3
    minimum_note_length_ms: float = 127.70
    onset_tolerance_s: float = 0.05  # mir_eval's default, the MIREX convention
    pitch_tolerance_cents: float = 50.0


def notes_unavailable_reason() -> str | None:
    """``None`` when basic-pitch, onnxruntime and mir_eval import; else why not and how to fix it."""
    for module in ("onnxruntime", "mir_eval", "pretty_midi", "basic_pitch"):
        try:
            with _quiet():
                __import__(module)
        except Exception as exc:  # ImportError, or a broken install failing at import time
            return (f"note metrics missing: {module} could not be imported ({type(exc).__name__}: {exc}); "
                    f"install the optional note transcriber with: {INSTALL_HINT}")
    return None


@contextlib.contextmanager
def _quiet():
    """basic-pitch warns on import about every backend it lacks and prints on every file."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


class NoteTranscriber:
    """basic-pitch's ONNX model, loaded once and reused for every excerpt."""

    def __init__(self, config: NoteConfig = NoteConfig()):
        reason = notes_unavailable_reason()
        if reason:
            raise SimDPSError(reason)
        with _quiet():
            from basic_pitch import FilenameSuffix, build_icassp_2022_model_path
            from basic_pitch.inference import Model

            self._model = Model(build_icassp_2022_model_path(FilenameSuffix.onnx))
        self.config = config

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Notes as an ``(n, 3)`` array of ``onset_s, offset_s, midi_pitch``, sorted by onset."""
        from basic_pitch.inference import predict

        # basic-pitch reads a file (librosa.load, resampled to 22.05 kHz).
        with tempfile.TemporaryDirectory(prefix="simdps-notes-") as tmp:
            path = Path(tmp) / "excerpt.wav"
            sf.write(path, to_mono(np.asarray(audio, dtype=np.float64)), sample_rate, subtype="FLOAT")
            with _quiet():
                _, _, events = predict(
                    path, self._model,
                    onset_threshold=self.config.onset_threshold,
                    frame_threshold=self.config.frame_threshold,
                    minimum_note_length=self.config.minimum_note_length_ms,
                )
        notes = np.array([(float(e[0]), float(e[1]), float(e[2])) for e in events], dtype=np.float64)
        notes = notes.reshape(-1, 3)
        return notes[np.argsort(notes[:, 0], kind="stable")]


def note_scores(original_notes: np.ndarray, restored_notes: np.ndarray, gap_start_s: float,
                gap_end_s: float, config: NoteConfig = NoteConfig()) -> dict[str, float]:
    """``note_precision``, ``note_recall``, ``note_f1`` of the notes with onsets in the gap."""
    def in_gap(notes: np.ndarray) -> np.ndarray:
        notes = np.asarray(notes, dtype=np.float64).reshape(-1, 3)
        keep = (notes[:, 0] >= gap_start_s) & (notes[:, 0] < gap_end_s) & (notes[:, 1] > notes[:, 0])
        return notes[keep]

    ref, est = in_gap(original_notes), in_gap(restored_notes)
    if len(ref) == 0 or len(est) == 0:
        p = 1.0 if len(est) == 0 else 0.0
        r = 1.0 if len(ref) == 0 else 0.0
        f = 1.0 if len(ref) == len(est) == 0 else 0.0
        return {"note_precision": p, "note_recall": r, "note_f1": f}
    import mir_eval

    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref[:, :2], mir_eval.util.midi_to_hz(ref[:, 2]), est[:, :2], mir_eval.util.midi_to_hz(est[:, 2]),
        onset_tolerance=config.onset_tolerance_s, pitch_tolerance=config.pitch_tolerance_cents,
        offset_ratio=None,
    )
    return {"note_precision": float(p), "note_recall": float(r), "note_f1": float(f)}


def missing_note_scores() -> dict[str, float]:
    """The note metrics as NaN, for runs without the transcriber."""
    return {"note_precision": math.nan, "note_recall": math.nan, "note_f1": math.nan}
