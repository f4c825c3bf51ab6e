"""Reports of an evaluation run: the long CSV, the Markdown summary and box plots.

A *row* is one score: ``excerpt_id, track, excerpt_start_s, method, metric, value``. The
CSV holds every row (excerpt x method x metric); the summary gives, per method and
metric, the median and the interquartile range ``[Q1, Q3]`` over excerpts (linear
interpolation between order statistics, NaN scores left out and counted); the plots show
one box per method for each metric.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simdps.atomic import write_bytes_atomic, write_text_atomic
from simdps.evaluation.metrics import METRICS, MetricInfo

__all__ = [
    "Score",
    "CSV_COLUMNS",
    "write_scores_csv",
    "read_scores_csv",
    "Summary",
    "summarise",
    "summary_markdown",
    "plot_boxplots",
]

CSV_COLUMNS = ("excerpt_id", "track", "excerpt_start_s", "method", "metric", "value")


@dataclass(frozen=True)
class Score:
    """One metric value of one method on one excerpt."""

    excerpt_id: str
    track: str
    excerpt_start_s: float
    method: str
    metric: str
    value: float


def write_scores_csv(path: str | os.PathLike, scores: Iterable[Score]) -> Path:
    """All scores as CSV (``inf``/``nan`` written as such), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in scores:
        writer.writerow([s.excerpt_id, s.track, f"{s.excerpt_start_s:.6f}", s.method, s.metric, repr(float(s.value))])
    return write_text_atomic(path, buf.getvalue())


def read_scores_csv(path: str | os.PathLike) -> list[Score]:
    """The scores of :func:`write_scores_csv`'s file."""
    with open(path, newline="") as f:
        return [Score(r["excerpt_id"], r["track"], float(r["excerpt_start_s"]), r["method"], r["metric"],
                      float(r["value"])) for r in csv.DictReader(f)]


@dataclass(frozen=True)
class Summary:
    """Median and quartiles of one metric for one method; ``n`` scores, ``n_nan`` left out."""

    n: int
    n_nan: int
    median: float
    q1: float
    q3: float


def _quartiles(values: np.ndarray) -> tuple[float, float, float]:
    # +-inf (an SNR of an exact copy) would make the interpolation inf - inf = NaN, so they
    # stand in as a huge finite value and are mapped back: a quantile at or next to an
    # infinite score is infinite.
    big = np.finfo(np.float64).max / 4
    q = np.percentile(np.clip(values, -big, big), [50, 25, 75])
    q = np.where(np.abs(q) >= big / 2 ** 50, np.sign(q) * np.inf, q)
    return float(q[0]), float(q[1]), float(q[2])


def summarise(scores: Iterable[Score]) -> dict[str, dict[str, Summary]]:
    """``summary[method][metric]`` over excerpts."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in scores:
        values[(s.method, s.metric)].append(float(s.value))
    out: dict[str, dict[str, Summary]] = defaultdict(dict)
    for (method, metric), vals in values.items():
        arr = np.asarray(vals, dtype=np.float64)
        finite = arr[~np.isnan(arr)]
        n_nan = int(arr.size - finite.size)
        if finite.size == 0:
            out[method][metric] = Summary(0, n_nan, math.nan, math.nan, math.nan)
        else:
            out[method][metric] = Summary(int(finite.size), n_nan, *_quartiles(finite))
    return dict(out)


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


_BETTER = {"lower": "lower is better", "higher": "higher is better", "zero": "0 is best"}


def summary_markdown(
    summary: dict[str, dict[str, Summary]],
    methods: Sequence[str],
    *,
    title: str = "Evaluation summary",
    notes: Sequence[str] = (),
) -> str:
    """A Markdown table: one row per metric, one column per method, ``median [Q1, Q3]``."""
    metrics = [m for m in METRICS if any(m in summary.get(meth, {}) for meth in methods)]
    metrics += sorted({m for meth in methods for m in summary.get(meth, {})} - set(metrics))
    n_excerpts = max((s.n + s.n_nan for meth in methods for s in summary.get(meth, {}).values()), default=0)
    lines = [f"# {title}", "", f"Median [Q1, Q3] over {n_excerpts} excerpts, scored inside the gap.", ""]
    lines.append("| metric | " + " | ".join(methods) + " |")
    lines.append("| --- | " + " | ".join("---" for _ in methods) + " |")
    for metric in metrics:
        info = METRICS.get(metric, MetricInfo(metric, "", "zero", metric))
        unit = f", {info.unit}" if info.unit else ""
        cells = []
        for meth in methods:
            s = summary.get(meth, {}).get(metric)
            if s is None:
                cells.append("not run")
            elif s.n == 0:
                cells.append(f"missing ({s.n_nan})")
            else:
                cell = f"{_fmt(s.median)} [{_fmt(s.q1)}, {_fmt(s.q3)}]"
                cells.append(cell + (f" ({s.n_nan} missing)" if s.n_nan else ""))
        lines.append(f"| {metric} ({_BETTER[info.better]}{unit}) | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def plot_boxplots(folder: str | os.PathLike, scores: Iterable[Score], methods: Sequence[str]) -> list[Path]:
    """One PNG per metric, ``<folder>/<metric>.png``, a box per method (non-finite scores left out)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    by_metric: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in scores:
        if math.isfinite(s.value):
            by_metric[s.metric][s.method].append(s.value)
    written = []
    for metric, per_method in sorted(by_metric.items()):
        present = [m for m in methods if per_method.get(m)]
        if not present:
            continue
        info = METRICS.get(metric, MetricInfo(metric, "", "zero", metric))
        # The object-oriented Agg canvas: no pyplot state, no display needed.
        fig = Figure(figsize=(1.2 + 1.1 * len(present), 4.0), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.boxplot([per_method[m] for m in present])
        ax.set_xticks(range(1, len(present) + 1), present)
        if info.better == "zero":
            ax.axhline(0.0, color="0.6", linewidth=0.8, linestyle="--")
        ax.set_title(f"{info.title} ({_BETTER[info.better]})", fontsize=9)
        ax.set_ylabel(f"{metric} [{info.unit}]" if info.unit else metric)
        ax.tick_params(axis="x", labelrotation=30)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        written.append(write_bytes_atomic(folder / f"{metric}.png", buf.getvalue()))
    return written
