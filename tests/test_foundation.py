"""The shared foundation: gap parsing and validation, audio I/O that never damages data."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from simdps import Gap, GapError, SimDPSError, parse_gap
from simdps.audio import (
    KeptHandles,
    audio_info,
    read_audio,
    read_audio_mono,
    read_audio_ranges,
    resample,
    to_mono,
    write_audio_atomic,
)
from simdps.gaps import gap_mask, parse_time, validate_gaps


@pytest.mark.parametrize("text, expected", [
    ("12.5:14.5", Gap(12.5, 14.5)),
    ("1:02.5-1:04.5", Gap(62.5, 64.5)),
    ("1:02.5:1:04", Gap(62.5, 64.0)),
    ("0:3", Gap(0.0, 3.0)),
])
def test_gaps_are_read_in_seconds_or_minutes(text, expected):
    assert parse_gap(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "3:2", "1:2:3", "1:75-2:00", "5:5"])
def test_malformed_gaps_raise_a_clear_error(text):
    with pytest.raises(GapError, match="gap|time|seconds"):
        parse_gap(text)


@pytest.mark.parametrize("text, says", [
    ("-2:1", "starts before the recording"),  # not "cannot read ''"
    ("1:00.0", "reads as 1 s to 0 s"),  # one mm:ss.s time, no END: read as START:END, reversed
    ("7:5", "a START and a later END"),
])
def test_a_negative_or_reversed_gap_says_what_is_wrong_with_it(text, says):
    with pytest.raises(GapError, match=says):
        parse_gap(text)


def test_gaps_outside_or_overlapping_are_refused():
    with pytest.raises(GapError, match="outside"):
        validate_gaps([Gap(9.0, 11.0)], 10.0)
    with pytest.raises(GapError, match="overlap"):
        validate_gaps([Gap(1.0, 3.0), Gap(2.0, 4.0)], 10.0)
    assert validate_gaps([Gap(5, 6), Gap(1, 2)], 10.0) == [Gap(1, 2), Gap(5, 6)]


def test_gap_mask_is_zero_exactly_inside_the_gap():
    g = Gap(0.5, 1.0)
    s, e = g.to_samples(1000)
    m = gap_mask(2000, [(s, e)])
    assert not m[500:1000].any() and m[:500].all() and m[1000:].all()
    assert parse_time("2:03.5") == 123.5


def test_outputs_get_the_usual_permissions_not_owner_only(tmp_path):
    """Atomic writes go through temporary files, which tempfile makes owner-only (0o600, 0o700);
    what lands under the final name (a restored track, an index others search) must have the
    permissions of any file this user creates (0o666 / 0o777 less the umask)."""
    from simdps.atomic import temp_dir, write_text_atomic

    umask = os.umask(0o022)
    os.umask(umask)
    out = tmp_path / "restored.flac"
    write_audio_atomic(out, np.zeros((800, 1)), 8000)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert write_text_atomic(tmp_path / "report.json", "{}").stat().st_mode & 0o777 == 0o666 & ~umask
    assert temp_dir(tmp_path, prefix="gen-").stat().st_mode & 0o777 == 0o777 & ~umask


def test_atomic_write_refuses_to_overwrite_and_leaves_no_temp(tmp_path):
    x = np.linspace(-0.5, 0.5, 800)[:, None]
    out = tmp_path / "a.flac"
    write_audio_atomic(out, x, 8000, subtype="PCM_24")
    before = out.read_bytes()
    with pytest.raises(SimDPSError, match="exists"):
        write_audio_atomic(out, x * 0, 8000)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["a.flac"]
    assert sf.info(out).subtype == "PCM_24"


def test_a_long_ogg_vorbis_file_is_written_in_one_piece(tmp_path):
    """libsndfile's Vorbis encoder kills the process when handed ~2 M frames in one call; the
    atomic writer hands them over in blocks. Run apart so a crash fails this test, not the run."""
    import subprocess
    import sys

    out = tmp_path / "long.ogg"
    code = ("import sys, numpy as np; from simdps.audio import write_audio_atomic; "
            "x = 0.1 * np.random.default_rng(0).standard_normal(8000 * 300).astype('float32'); "
            "write_audio_atomic(sys.argv[1], x, 8000)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sf.info(out).frames == 8000 * 300
    assert sorted(os.listdir(tmp_path)) == ["long.ogg"]


def test_unreadable_and_empty_files_raise_audio_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    with pytest.raises(SimDPSError, match="not a readable audio file"):
        read_audio(bad)
    with pytest.raises(SimDPSError, match="no such file"):
        audio_info(tmp_path / "missing.wav")


def test_several_ranges_of_one_file_read_as_separate_reads_would(tmp_path):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (50_000, 2))
    path = tmp_path / "a.flac"
    write_audio_atomic(path, x, 22_050, subtype="PCM_16")
    ranges = [(100, 9_000), (30_000, 41_000), (49_990, None), (60_000, 70_000)]
    parts, sr, frames = read_audio_ranges(path, ranges, dtype="float32")
    assert sr == 22_050 and frames == 50_000 and [len(p) for p in parts] == [8_900, 11_000, 10, 0]
    for (lo, hi), part in zip(ranges, parts):
        alone, _ = read_audio(path, start=lo, stop=hi, dtype="float32")
        np.testing.assert_array_equal(part, alone)
    assert np.max(np.abs(parts[1] - x[30_000:41_000])) < 1e-4  # 16-bit quantisation only


def test_a_file_is_read_as_its_mono_mix_block_by_block(tmp_path, monkeypatch):
    import simdps.audio as audio

    x = np.random.default_rng(3).uniform(-0.5, 0.5, (50_001, 2))
    path = tmp_path / "s.flac"
    write_audio_atomic(path, x, 22_050, subtype="PCM_24")
    whole, sr = read_audio(path, dtype="float64")
    monkeypatch.setattr(audio, "_MONO_BLOCK", 4_096)  # 13 blocks, the last a partial one
    mono, sr_mono = read_audio_mono(path)
    assert sr_mono == sr == 22_050 and mono.dtype == np.float32 and mono.shape == (50_001,)
    np.testing.assert_allclose(mono, whole.mean(axis=1), rtol=0, atol=1e-7)
    mono64, _ = read_audio_mono(path, dtype="float64")
    np.testing.assert_array_equal(mono64, to_mono(whole))  # float64: the same mix to the bit
    at12k, sr12 = read_audio_mono(path, 12_000)
    assert sr12 == 12_000 and len(at12k) == pytest.approx(50_001 * 12_000 / 22_050, abs=1)
    monkeypatch.setattr(audio, "_MONO_PARALLEL_FRAMES", 1_000)  # a "long" file: parts decoded at once
    for workers in (2, 3):
        parts, _ = read_audio_mono(path, workers=workers)
        np.testing.assert_array_equal(parts, mono)  # FLAC after a seek: the same samples
    wav = tmp_path / "s.wav"
    write_audio_atomic(wav, x, 22_050, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio_mono(wav, workers=3)[0], read_audio_mono(wav, workers=1)[0])
    cut = tmp_path / "cut.flac"  # a truncated file: a later part fails, and the one-pass decode says why
    cut.write_bytes(path.read_bytes()[:len(path.read_bytes()) * 4 // 10])
    for workers in (1, 2):
        with pytest.raises(SimDPSError, match="decoding failed .*the file may be damaged"):
            read_audio_mono(cut, workers=workers)
    with pytest.raises(SimDPSError, match="not a readable audio file"):
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"RIFF nonsense")
        read_audio_mono(bad)
    with pytest.raises(SimDPSError, match="no such file"):
        read_audio_mono(tmp_path / "missing.flac")


def _mp3(path, seconds, seed, sr=22_050):
    x = 0.3 * np.sin(2 * np.pi * np.linspace(220, 880 + 50 * seed, int(seconds * sr)).cumsum() / sr)
    sf.write(path, np.stack([x, 0.5 * x], axis=1), sr, format="MP3")
    return path


def test_kept_handles_give_the_same_samples_and_are_reused_for_mp3_only(tmp_path):
    mp3 = _mp3(tmp_path / "a.mp3", 20.0, 0)
    flac = tmp_path / "a.flac"
    write_audio_atomic(flac, np.zeros((22_050, 1)) + 0.1, 22_050)
    handles = KeptHandles(max_open=2)
    ranges = [(300_000, 330_000), (20_000, 41_000)]
    fresh, sr, frames = read_audio_ranges(mp3, ranges, dtype="float32")
    for _ in range(3):  # the same reads through one kept handle, seeking back and forth
        got, sr2, frames2 = read_audio_ranges(mp3, ranges, dtype="float32", handles=handles)
        assert (sr2, frames2) == (sr, frames) and len(handles) == 1
        for a, b in zip(fresh, got):  # mpg123's state after a seek depends on where it came from: ~1 ulp
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    read_audio_ranges(flac, [(0, 100)], handles=handles)
    assert len(handles) == 1  # FLAC seeks as fast from a fresh handle: not kept
    for i in range(3):  # at most max_open kept, the least recently used closed first
        read_audio_ranges(_mp3(tmp_path / f"b{i}.mp3", 2.0, i + 1), [(0, 100)], handles=handles)
    assert len(handles) == 2
    handles.close()
    assert len(handles) == 0


def test_a_kept_handle_is_not_used_once_its_file_changed(tmp_path):
    path = _mp3(tmp_path / "a.mp3", 5.0, 0)
    handles = KeptHandles()
    first, _, frames = read_audio_ranges(path, [(1_000, 2_000)], handles=handles)
    _mp3(tmp_path / "b.mp3", 8.0, 3).replace(path)  # another recording under the same name
    again, _, frames_now = read_audio_ranges(path, [(1_000, 2_000)], handles=handles)
    assert frames_now != frames and not np.array_equal(first[0], again[0])
    np.testing.assert_allclose(again[0], read_audio(path, start=1_000, stop=2_000)[0], rtol=0, atol=1e-6)
    path.unlink()
    with pytest.raises(SimDPSError, match="no such file"):
        read_audio_ranges(path, [(0, 10)], handles=handles)


def test_kept_handles_serve_reads_from_several_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    path = _mp3(tmp_path / "a.mp3", 30.0, 0)
    starts = list(range(0, 600_000, 37_000))
    want = [read_audio(path, start=a, stop=a + 20_000, dtype="float32")[0] for a in starts]
    handles = KeptHandles()
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda a: read_audio_ranges(path, [(a, a + 20_000)], dtype="float32",
                                                           handles=handles)[0][0], starts))
            for w, g in zip(want, got):
                np.testing.assert_allclose(w, g, rtol=0, atol=1e-6)
    assert 1 <= len(handles) <= 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [2, 3, 6])
def test_to_mono_is_the_mean_over_channels_to_the_bit(dtype, channels):
    x = np.random.default_rng(channels).standard_normal((10_001, channels)).astype(dtype)
    mono = to_mono(x)
    assert mono.dtype == dtype and mono.shape == (10_001,)
    np.testing.assert_array_equal(mono, x.mean(axis=1))
    assert to_mono(x[:, :1]).base is not None  # one channel: a view, no copy


def test_resample_preserves_a_tone():
    sr_in, sr_out = 44100, 12000
    t = np.arange(sr_in) / sr_in
    y = resample(np.sin(2 * np.pi * 440 * t), sr_in, sr_out)
    assert abs(len(y) - sr_out) <= 1
    spec = np.abs(np.fft.rfft(y[1000:-1000] * np.hanning(len(y) - 2000)))
    peak_hz = np.argmax(spec) * sr_out / (len(y) - 2000)
    assert abs(peak_hz - 440) < 2
