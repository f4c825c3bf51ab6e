"""The evaluation loop behind ``simdps-eval``: excerpts -> retrieval -> restoration -> scores -> reports.

For each excerpt (:mod:`~simdps.evaluation.excerpts`) the guide candidates are retrieved
once, from the whole track around the excerpt's gap (the gap's own context is excluded
by the search, :func:`simdps.retrieval.track.search_track`) and from the index when one
is given, and shared by every guided method (:mod:`~simdps.evaluation.restoration`). Each method then restores the gap
of the excerpt window alone, and the result is scored against the original
(:func:`~simdps.evaluation.metrics.gap_metrics`, plus the note score when basic-pitch is
installed). Everything lands under the output folder::

    eval_config.json, excerpts.json     the settings and the excerpt list (reproducible)
    audio/<excerpt>/original.wav, <method>.wav
    results/<excerpt>/<method>.json     one restoration's scores, guide and timing
    scores.csv, summary.md, plots/*.png the reports, rebuilt from results/ at the end
    mushra/                             the webMUSHRA test (--mushra)

A result file is written last, atomically, once its audio is on disk, so a rerun with
the same settings skips every (excerpt, method) already done and resumes the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from simdps.audio import write_audio_atomic
from simdps.errors import SimDPSError
from simdps.evaluation.excerpts import (
    Excerpt,
    ExcerptConfig,
    choose_excerpts,
    find_recordings,
    read_manifest,
    write_manifest,
)
from simdps.atomic import write_json_atomic, write_text_atomic
from simdps.evaluation.metrics import MetricConfig, gap_metrics
from simdps.evaluation.mushra import MushraConfig, MushraItem, write_webmushra
from simdps.evaluation.notes import NoteTranscriber, missing_note_scores, note_scores, notes_unavailable_reason
from simdps.evaluation.report import Score, plot_boxplots, summarise, summary_markdown, write_scores_csv
from simdps.evaluation.restoration import ExcerptRestorer
from simdps.restore.config import GUIDED_METHODS, METHODS, MODEL_METHODS, RestoreConfig
from simdps.restore.samples import NativeAudio, read_native, to_float

__all__ = ["ALL_METHODS", "EvalConfig", "EvalResult", "parse_methods", "run_evaluation"]

# The paper's conditions (sec. 5) plus ``auto``, in the order reports list them.
ALL_METHODS = METHODS


def parse_methods(text: str) -> tuple[str, ...]:
    """``"lpc,sim"`` -> ``("lpc", "sim")``; ``"all"`` -> every method; unknown names rejected."""
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if names == ["all"]:
        return ALL_METHODS
    unknown = [n for n in names if n not in ALL_METHODS]
    if unknown or not names:
        raise SimDPSError(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ALL_METHODS)}")
    return tuple(dict.fromkeys(names))  # keep the order given, drop repeats


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run; serialised to ``eval_config.json`` next to its results."""

    excerpts: ExcerptConfig = field(default_factory=ExcerptConfig)
    methods: tuple[str, ...] = ALL_METHODS
    index: str | None = None  # also retrieve from this index
    checkpoint: str | None = None  # diffusion model (None: the shipped default)
    steps: int | None = None  # sampler steps (None: the paper's 50)
    k: int = 10  # candidates retrieved per gap
    device: str | None = None  # torch device for the model
    notes: bool = True  # note-level score when basic-pitch is installed
    metrics: MetricConfig = field(default_factory=MetricConfig)
    plots: bool = True  # box plots (one PNG per metric)
    mushra: MushraConfig | None = None  # write a webMUSHRA test too

    def restore_config(self) -> RestoreConfig:
        """The fill settings: the paper's, with this run's steps, seed and k."""
        base = RestoreConfig()
        return dataclasses.replace(base, steps=base.steps if self.steps is None else self.steps,
                                   seed=self.excerpts.seed, k=self.k)

    def restoration_settings(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (it changes the audio)."""
        return {"excerpts": asdict(self.excerpts), "index": self.index, "checkpoint": self.checkpoint,
                "steps": self.steps, "k": self.k, "metrics": asdict(self.metrics)}


@dataclass(frozen=True)
class EvalResult:
    """Where a run's outputs are, and what it could not do."""

    out_dir: Path
    scores_csv: Path
    summary_md: Path
    plots_dir: Path
    audio_dir: Path
    mushra_yaml: Path | None
    n_excerpts: int
    n_restored: int  # (excerpt, method) pairs restored by this call
    n_skipped: int  # pairs found done and skipped
    failures: tuple[str, ...]
    notes: tuple[str, ...]


def run_evaluation(recordings_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   config: EvalConfig = EvalConfig(), *, progress: bool = True) -> EvalResult:
    """Run (or resume) an evaluation; see the module docstring for what it writes."""
    config.excerpts.check()
    if not config.methods:
        raise SimDPSError("no method to evaluate; pass --methods")
    methods = tuple(config.methods)
    if config.mushra is not None and config.mushra.anchor not in methods:
        methods = (config.mushra.anchor, *methods)  # the listening test needs its low anchor
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    excerpts = _excerpts_for(Path(recordings_dir), out, config)
    _check_resumable(out, config)
    write_json_atomic(out / "eval_config.json", _config_dict(config))

    notes: list[str] = []
    transcriber = None
    if config.notes:
        reason = notes_unavailable_reason()
        if reason:
            notes.append(reason)
        else:
            transcriber = NoteTranscriber()
    else:
        notes.append("note metrics missing: disabled with --no-notes")

    todo = [(e, m) for e in excerpts for m in methods if not _result_path(out, e, m).exists()]
    todo_set = set(todo)
    n_skipped = len(excerpts) * len(methods) - len(todo)
    failures: list[str] = []
    restorer = ExcerptRestorer(config.restore_config(), index=config.index, checkpoint=config.checkpoint,
                               device=config.device, need_model=any(m in MODEL_METHODS for _, m in todo))
    position = {e.excerpt_id: i for i, e in enumerate(excerpts)}  # seeds the sampler per excerpt
    by_track: dict[str, list[Excerpt]] = {}
    for e, _ in todo:
        if e not in by_track.setdefault(e.track, []):
            by_track[e.track].append(e)
    with tqdm(total=len(todo), desc="restore+score", unit="restoration", disable=not progress) as bar:
        for track_path, track_excerpts in by_track.items():
            track = read_native(track_path)  # each track decoded once, in its exact sample format
            for excerpt in track_excerpts:
                pending = [m for m in methods if (excerpt, m) in todo_set]
                failures += _evaluate_excerpt(out, track, excerpt, position[excerpt.excerpt_id], pending,
                                              restorer, transcriber, config, bar)

    result = _write_reports(out, excerpts, methods, config, notes, failures)
    return dataclasses.replace(result, n_restored=len(todo) - len(failures), n_skipped=n_skipped)


def _evaluate_excerpt(out: Path, track: NativeAudio, excerpt: Excerpt, seed_offset: int,
                      methods: list[str], restorer: ExcerptRestorer, transcriber: NoteTranscriber | None,
                      config: EvalConfig, bar: tqdm) -> list[str]:
    """Restore and score one excerpt with ``methods``; returns the failures (user-level errors)."""
    sr = track.sample_rate
    original = to_float(excerpt.cut(track.data))
    folder = out / "audio" / excerpt.excerpt_id
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "original.wav").exists():
        write_audio_atomic(folder / "original.wav", original, sr, subtype="FLOAT")
    original_notes = transcriber.transcribe(original, sr) if transcriber is not None else None
    search_error: SimDPSError | None = None
    try:  # one search per excerpt, shared by every guided method
        guide, search_s = restorer.find_guide(track, excerpt, methods)
    except SimDPSError as exc:
        guide, search_s, search_error = None, 0.0, exc
    failures = []
    for method in methods:
        bar.set_postfix_str(f"{excerpt.excerpt_id} {method}", refresh=False)
        try:
            if search_error is not None and method in GUIDED_METHODS:
                raise search_error
            restored, facts = restorer.restore(track, excerpt, method, guide, seed_offset=seed_offset)
        except SimDPSError as exc:
            failures.append(f"{excerpt.excerpt_id} {method}: {exc}")
            bar.write(f"failed: {excerpt.excerpt_id} {method}: {exc}")
            bar.update(1)
            continue
        facts["timings_s"]["search"] = round(search_s, 4)
        write_audio_atomic(folder / f"{method}.wav", restored, sr, subtype="FLOAT", overwrite=True)
        scores = gap_metrics(original, restored, sr, excerpt.gap_in_excerpt, config.metrics)
        if transcriber is not None:
            gap = excerpt.excerpt_gap
            scores.update(note_scores(original_notes, transcriber.transcribe(restored, sr), gap.start_s, gap.end_s))
        else:
            scores.update(missing_note_scores())
        _write_result(out, excerpt, method, scores, facts)  # last: marks the pair done
        bar.update(1)
    return failures


# --- excerpts and resumption ---------------------------------------------------------

def _excerpts_for(recordings_dir: Path, out: Path, config: EvalConfig) -> list[Excerpt]:
    """The manifest's excerpts when resuming, else a new seeded choice (written to the manifest)."""
    manifest = out / "excerpts.json"
    if manifest.exists():
        folder, cfg, excerpts = read_manifest(manifest)
        if folder != str(recordings_dir.resolve()) or cfg != config.excerpts:
            raise SimDPSError(
                f"{out} holds an evaluation of other recordings or excerpt settings ({manifest}); "
                "use a new --out folder, or the same RECORDINGS_DIR, --excerpts, --excerpt-s, --gap-s and --seed"
            )
        missing = sorted({e.track for e in excerpts if not Path(e.track).is_file()})
        if missing:
            raise SimDPSError(f"recordings of this evaluation are gone: {', '.join(missing)}")
        return excerpts
    # An output folder inside the recordings folder must not feed its own audio back in.
    paths = [p for p in find_recordings(recordings_dir) if not p.is_relative_to(out.resolve())]
    if not paths:
        raise SimDPSError(f"{recordings_dir}: no recordings outside the output folder {out}")
    excerpts = choose_excerpts(paths, config.excerpts)
    write_manifest(manifest, recordings_dir, config.excerpts, excerpts)
    return excerpts


def _config_dict(config: EvalConfig) -> dict[str, Any]:
    doc = asdict(config)
    doc["methods"] = list(config.methods)
    return doc


def _check_resumable(out: Path, config: EvalConfig) -> None:
    path = out / "eval_config.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
        old_cfg = {k: old.get(k) for k in ("excerpts", "index", "checkpoint", "steps", "k", "metrics")}
    except (OSError, ValueError) as exc:
        raise SimDPSError(f"{path}: unreadable ({exc}); use a new --out folder") from None
    new_cfg = json.loads(json.dumps(config.restoration_settings()))
    changed = sorted(k for k in new_cfg if old_cfg.get(k) != new_cfg[k])
    if changed:
        raise SimDPSError(
            f"{out} was evaluated with other settings ({', '.join(changed)} differ); resuming would mix "
            "results: use a new --out folder or the same settings"
        )


def _result_path(out: Path, excerpt: Excerpt, method: str) -> Path:
    return out / "results" / excerpt.excerpt_id / f"{method}.json"


def _write_result(out: Path, excerpt: Excerpt, method: str, scores: dict[str, float],
                  info: dict[str, Any]) -> None:
    path = _result_path(out, excerpt, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"excerpt": asdict(excerpt), "method": method,
                             "scores": {k: float(v) for k, v in scores.items()}, **info})


def _read_results(out: Path, excerpts: list[Excerpt], methods: tuple[str, ...]) -> list[dict[str, Any]]:
    docs = []
    for e in excerpts:
        for m in methods:
            path = _result_path(out, e, m)
            if path.exists():
                docs.append(json.loads(path.read_text()))
    return docs


# --- reports -------------------------------------------------------------------------

def _write_reports(out: Path, excerpts: list[Excerpt], methods: tuple[str, ...], config: EvalConfig,
                   notes: list[str], failures: list[str]) -> EvalResult:
    docs = _read_results(out, excerpts, methods)
    scores = [Score(d["excerpt"]["excerpt_id"], d["excerpt"]["track"], d["excerpt"]["start_sample"]
                    / d["excerpt"]["sample_rate"], d["method"], metric, value)
              for d in docs for metric, value in d["scores"].items()]
    scores_csv = write_scores_csv(out / "scores.csv", scores)
    plots_dir = out / "plots"
    if config.plots:
        plot_boxplots(plots_dir, scores, methods)

    report_notes = list(notes)
    times = {m: [d["timings_s"]["restore"] for d in docs if d["method"] == m and "timings_s" in d]
             for m in methods}
    timing = ", ".join(f"{m} {np.median(t):.2f} s" for m, t in times.items() if t)
    if timing:
        report_notes.append(f"median restoration time per excerpt: {timing}")
    done = {(d["excerpt"]["excerpt_id"], d["method"]) for d in docs}
    n_missing = len(excerpts) * len(methods) - len(done)
    if n_missing:
        report_notes.append(f"{n_missing} restorations not available (failed or not run): rerun to resume")
    report_notes += [f"failed: {f}" for f in failures]

    mushra_yaml = None
    if config.mushra is not None:
        items = [MushraItem(e.excerpt_id, out / "audio" / e.excerpt_id / "original.wav",
                            {m: out / "audio" / e.excerpt_id / f"{m}.wav" for m in methods},
                            e.excerpt_gap.start_s, e.excerpt_gap.end_s)
                 for e in excerpts if all((e.excerpt_id, m) in done for m in methods)]
        if items:
            mushra_yaml = write_webmushra(out / "mushra", items, methods, config.mushra)
        else:
            report_notes.append("no excerpt has every method restored: no webMUSHRA test written")
    summary = summary_markdown(summarise(scores), methods, notes=report_notes)
    summary_md = write_text_atomic(out / "summary.md", summary)
    return EvalResult(out, scores_csv, summary_md, plots_dir, out / "audio", mushra_yaml, len(excerpts),
                      0, 0, tuple(failures), tuple(report_notes))
