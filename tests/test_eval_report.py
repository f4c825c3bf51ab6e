"""CSV, Markdown summary and box plots of an evaluation."""

from __future__ import annotations

import math

import matplotlib.image
import pytest

from simdps.evaluation.report import (
    CSV_COLUMNS,
    Score,
    plot_boxplots,
    read_scores_csv,
    summarise,
    summary_markdown,
    write_scores_csv,
)


def _scores() -> list[Score]:
    out = []
    for k, lsd in enumerate([1.0, 2.0, 3.0, 4.0, 100.0]):
        eid = f"{k:03d}_t_{k:.2f}s"
        out.append(Score(eid, "t.wav", float(k), "lpc", "lsd_db", lsd))
        out.append(Score(eid, "t.wav", float(k), "sim", "lsd_db", lsd / 10))
        out.append(Score(eid, "t.wav", float(k), "sim", "snr_db", math.inf if k < 3 else 5.0))
        out.append(Score(eid, "t.wav", float(k), "sim", "note_f1", math.nan))
    return out


def test_csv_round_trip_keeps_every_score_including_inf_and_nan(tmp_path):
    scores = _scores()
    path = write_scores_csv(tmp_path / "scores.csv", scores)
    assert path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    back = read_scores_csv(path)
    assert len(back) == len(scores)
    for a, b in zip(scores, back):
        assert (a.excerpt_id, a.method, a.metric) == (b.excerpt_id, b.method, b.metric)
        assert (math.isnan(a.value) and math.isnan(b.value)) or a.value == b.value


def test_summary_is_median_and_interquartile_range():
    s = summarise(_scores())
    lpc = s["lpc"]["lsd_db"]
    assert (lpc.n, lpc.median, lpc.q1, lpc.q3) == (5, 3.0, 2.0, 4.0)  # robust to the 100 outlier
    assert s["sim"]["lsd_db"].median == pytest.approx(0.3)
    snr = s["sim"]["snr_db"]  # three exact copies (inf) out of five: the median is inf
    assert snr.median == math.inf and snr.q1 == 5.0 and snr.q3 == math.inf
    f1 = s["sim"]["note_f1"]
    assert f1.n == 0 and f1.n_nan == 5 and math.isnan(f1.median)


def test_markdown_table_has_a_row_per_metric_and_a_column_per_method():
    md = summary_markdown(summarise(_scores()), ["lpc", "sim"], notes=["note metric missing: no basic-pitch"])
    lines = md.splitlines()
    assert "| metric | lpc | sim |" in lines
    row = next(line for line in lines if line.startswith("| lsd_db"))
    assert "lower is better" in row and "3 [2, 4]" in row and "0.3 [0.2, 0.4]" in row
    snr = next(line for line in lines if line.startswith("| snr_db"))
    assert "not run" in snr and "∞ [5, ∞]" in snr
    assert "missing (5)" in next(line for line in lines if line.startswith("| note_f1"))
    assert "- note metric missing: no basic-pitch" in lines
    assert "over 5 excerpts" in md


def test_box_plots_are_png_one_per_metric(tmp_path):
    paths = plot_boxplots(tmp_path / "plots", _scores(), ["lpc", "sim"])
    # note_f1 has no finite score, so it gets no plot.
    assert sorted(p.name for p in paths) == ["lsd_db.png", "snr_db.png"]
    image = matplotlib.image.imread(paths[0])
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
