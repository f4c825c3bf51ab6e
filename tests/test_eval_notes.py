"""Note-level score: defined on empty gaps, mir_eval matching, and a clear note when absent."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from simdps.errors import SimDPSError
from simdps.evaluation.notes import NoteTranscriber, note_scores, notes_unavailable_reason

# onset_s, offset_s, midi pitch
ORIGINAL = np.array([[0.5, 0.9, 60], [2.1, 2.5, 64], [2.6, 3.0, 67], [3.2, 3.6, 72], [4.5, 5.0, 60]])


def test_empty_gaps_are_scored_by_definition():
    outside = ORIGINAL[[0, 4]]  # no onset inside [2, 4)
    assert note_scores(outside, outside, 2.0, 4.0) == {"note_precision": 1.0, "note_recall": 1.0, "note_f1": 1.0}
    assert note_scores(ORIGINAL, outside, 2.0, 4.0) == {"note_precision": 1.0, "note_recall": 0.0, "note_f1": 0.0}
    assert note_scores(outside, ORIGINAL, 2.0, 4.0) == {"note_precision": 0.0, "note_recall": 1.0, "note_f1": 0.0}


def test_notes_are_matched_inside_the_gap_only():
    pytest.importorskip("mir_eval")
    assert note_scores(ORIGINAL, ORIGINAL, 2.0, 4.0)["note_f1"] == 1.0
    restored = ORIGINAL.copy()
    restored[1, 0] += 0.03  # within the 50-ms onset tolerance: still a match
    restored[2, 2] += 1  # a semitone off: a miss and a false note
    restored[0, 2] += 5  # outside the gap: not scored
    s = note_scores(ORIGINAL, restored, 2.0, 4.0)
    assert s["note_precision"] == pytest.approx(2 / 3) and s["note_recall"] == pytest.approx(2 / 3)


def test_missing_transcriber_is_reported_with_the_install_command(monkeypatch):
    for module in ("onnxruntime", "mir_eval", "pretty_midi", "basic_pitch"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    reason = notes_unavailable_reason()
    assert reason.startswith("note metrics missing:")
    assert "pip install --no-deps basic-pitch==0.4.0" in reason
    with pytest.raises(SimDPSError, match="note metrics missing"):
        NoteTranscriber()


def test_transcription_of_a_known_melody_when_basic_pitch_is_installed():
    if notes_unavailable_reason():
        pytest.skip("basic-pitch (optional eval-notes extra) is not installed")
    sr = 22_050
    t = np.arange(int(0.5 * sr)) / sr
    melody = [60, 64, 67, 72]
    audio = np.concatenate([0.5 * np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t) * np.exp(-3 * t)
                            for p in melody])
    notes = NoteTranscriber().transcribe(audio, sr)
    assert set(melody) <= set(notes[:, 2].astype(int).tolist())
