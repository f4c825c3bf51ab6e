"""``restore()``: a recording with gaps in, the same recording with the gaps filled out.

Order of work, so that a user error costs nothing and leaves nothing behind:

1. check everything that can be checked cheaply: method, input file (readable, finite),
   gaps (inside the track, non-overlapping, non-empty), output and report paths (never
   the input, never an existing file without ``force``, container able to hold the
   input's samples), guide file, index, checkpoint, and each gap against the model window;
2. per gap (tqdm): retrieve the guide once (shared by every method), then fill the gap
   with each method, in order, each method seeing its own earlier fills;
3. write every output atomically; if one write fails, the outputs already written by
   this run are removed; then the JSON report.

Outside the gaps every output sample is the input's own sample (see
:mod:`simdps.restore.samples`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from simdps.errors import GapError, SimDPSError
from simdps.gaps import Gap, as_gap, validate_gaps
from simdps.restore.config import GUIDED_METHODS, MODEL_METHODS, RestoreConfig, check_method
from simdps.restore.fill import fill_gap, model_window
from simdps.restore.guide import Guide, GuideFinder, parse_guide_audio
from simdps.restore.report import GapRecord, RunReport, write_report
from simdps.restore.samples import NativeAudio, output_format, read_native, write_native
from simdps.restore.trackview import TrackView

__all__ = ["restore", "output_paths"]



def output_paths(track: Path, methods: Sequence[str], output: str | os.PathLike | None,
                 several: bool) -> dict[str, Path]:
    """Where each method's result goes: ``TRACK.restored.<ext>``, or ``TRACK.restored.<method>.<ext>``
    when several methods run (``-o OUT`` then gives ``OUT``'s stem ``.<method>`` and suffix)."""
    base = Path(output) if output is not None else track.with_name(f"{track.stem}.restored{track.suffix}")
    if not several:
        return {methods[0]: base}
    return {m: base.with_name(f"{base.stem}.{m}{base.suffix}") for m in methods}


def _as_gaps(gaps: Iterable[Gap | str | tuple[float, float]]) -> list[Gap]:
    return [as_gap(g) for g in gaps]


def _gap_samples(gaps: list[Gap], native: NativeAudio) -> list[tuple[int, int]]:
    sr, n = native.sample_rate, native.frames
    out = []
    for g in gaps:
        g0, g1 = g.to_samples(sr)
        g1 = min(g1, n)
        if g1 <= g0:
            raise GapError(f"gap {g} holds no sample at {sr} Hz; give a longer gap")
        out.append((g0, g1))
    for (a0, a1), (b0, b1) in zip(out, out[1:]):
        if b0 < a1:
            raise GapError(f"gaps overlap at {sr} Hz ({a0}-{a1} and {b0}-{b1} samples); merge them into one gap")
    return out


def _check_outputs(paths: dict[str, Path], track: Path, native: NativeAudio, force: bool) -> None:
    for path in paths.values():
        if path.resolve() == track.resolve():
            raise SimDPSError(f"{path}: that is the input file, which is never modified; choose another -o")
        if path.exists() and not force:
            raise SimDPSError(f"{path}: already exists; choose another -o or pass --force to replace it")
        if not path.parent.is_dir():
            raise SimDPSError(f"{path.parent}: output folder does not exist; create it first")
        output_format(path, native.info)


def restore(
    track: str | os.PathLike,
    gaps: Iterable[Gap | str | tuple[float, float]],
    *,
    output: str | os.PathLike | None = None,
    method: str = "auto",
    index: str | os.PathLike | None = None,
    guide_audio: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    model: tuple[Any, dict] | None = None,
    device: str = "auto",
    steps: int | None = None,
    seed: int | None = None,
    report: str | os.PathLike | None = None,
    force: bool = False,
    config: RestoreConfig | None = None,
    progress: bool = True,
) -> RunReport:
    """Fill the gaps of a recording and write the result next to it.

    Parameters
    ----------
    track : any file soundfile reads (WAV, FLAC, AIFF, OGG, MP3 ...), any rate and channel count.
    gaps : ``"START:END"`` strings, ``(start_s, end_s)`` pairs or :class:`~simdps.gaps.Gap`.
    output : output file (default ``TRACK.restored.<ext>``; with ``method="all"`` the base of
        ``TRACK.restored.<method>.<ext>``). Keeps the input's rate, channels and sample format.
    method : ``lpc``, ``sim``, ``dps``, ``simdps-l``, ``simdps-h``, ``auto`` or ``all``.
    index : corpus index folder to search besides the track (``simdps-index build``).
    guide_audio : ``FILE`` (searched for its best position) or ``FILE@START_S`` (fixed
        position): the guide comes from this recording only.
    checkpoint : model folder (default: the model shipped in the package).
    model : an already loaded ``(denoiser, info)`` (as from
        :func:`simdps.diffusion.checkpoint.load_model`), to restore many files with one load.
    device : ``auto``, ``cpu`` or ``cuda``.
    steps, seed : override ``config.steps`` / ``config.seed``.
    report : write the JSON report here.
    force : replace existing output and report files.
    config : everything else (:class:`RestoreConfig`).
    progress : show progress bars (per gap, per diffusion step).

    Returns
    -------
    RunReport, also written to ``report`` when given.
    """
    t_run = time.perf_counter()
    cfg = config or RestoreConfig()
    cfg = replace(cfg, steps=cfg.steps if steps is None else int(steps), seed=cfg.seed if seed is None else int(seed))
    several = method.lower() == "all"
    methods = check_method(method)
    track = Path(track)

    # 1. Cheap checks first.
    native = read_native(track)
    gap_list = validate_gaps(_as_gaps(gaps), native.frames / native.sample_rate, what=str(track))
    gap_samples = _gap_samples(gap_list, native)
    outputs = output_paths(track, methods, output, several)
    _check_outputs(outputs, track, native, force)
    report_path = Path(report) if report is not None else None
    if report_path is not None:
        if report_path.exists() and not force:
            raise SimDPSError(f"{report_path}: already exists; choose another --report or pass --force")
        if not report_path.parent.is_dir():
            raise SimDPSError(f"{report_path.parent}: report folder does not exist; create it first")
        if report_path.resolve() in {p.resolve() for p in outputs.values()} | {track.resolve()}:
            raise SimDPSError(f"{report_path}: the report cannot be written over an audio file")
    guide_path, guide_start_s = parse_guide_audio(guide_audio) if guide_audio is not None else (None, None)

    base = TrackView(native, gap_samples)
    finder = None
    notes: list[str] = []
    if not any(m in GUIDED_METHODS for m in methods):
        for flag, value in (("--index", index), ("--guide-audio", guide_path)):
            if value is not None:
                if not Path(value).exists():
                    raise SimDPSError(f"{flag} {value}: no such file or folder")
                notes.append(f"{flag} not used: method {method} takes no guide")
    else:
        if index is not None and guide_path is not None:
            notes.append("--index not used: --guide-audio gives the guide")
            index = None
        finder = GuideFinder(base, str(track), index_dir=index, guide_audio=guide_path,
                             guide_start_s=guide_start_s, k=cfg.k, cfg=cfg.search)

    denoiser, info = None, None
    if any(m in MODEL_METHODS for m in methods):
        if model is not None:
            denoiser, info = model
        else:
            from simdps.restore.model import load_restore_model

            denoiser, info = load_restore_model(checkpoint, device)
        for i in range(len(gap_samples)):
            model_window(base, i, info, cfg)  # raises GapError for a gap the window cannot hold

    run = RunReport(
        input=str(track), outputs={m: str(p) for m, p in outputs.items()}, sample_rate=native.sample_rate,
        channels=native.channels, subtype=native.info.subtype, methods=list(methods),
        device=_device_name(denoiser), checkpoint=_checkpoint_facts(info), index=None if index is None else str(index),
        guide_audio=None if guide_audio is None else str(guide_audio), config=asdict(cfg),
        notes=notes, version=_version(),
    )

    # 2. Gap by gap, method by method.
    views = {m: TrackView(native, gap_samples) for m in methods}
    skipped: set[str] = set()
    bar = tqdm(list(enumerate(zip(gap_list, gap_samples))), desc="gaps", unit="gap", disable=not progress)
    for i, (gap, _) in bar:
        bar.set_postfix_str(str(gap))
        guide, search_s = None, 0.0
        if finder is not None:
            t0 = time.perf_counter()
            guide = finder.find(i)
            search_s = time.perf_counter() - t0
        for m in methods:
            if m in skipped:
                continue
            if guide is None and m in ("sim", "simdps-l", "simdps-h"):
                if several:  # "all" runs what can run; an explicit request must not silently change
                    skipped.add(m)
                    continue
                raise SimDPSError(
                    f"gap {gap}: no guide candidate was found ({_no_guide_reason(finder)}); "
                    "pass --index DIR or --guide-audio FILE, or use --method dps or auto"
                )
            record = GapRecord(gap.start_s, gap.end_s, m, guide=guide.record if guide is not None
                               and m in GUIDED_METHODS else None)
            t0 = time.perf_counter()
            _fill_one(m, views[m], i, guide, denoiser, info, cfg, record, progress)
            record.timings_s = {"search": round(search_s, 4), "fill": round(time.perf_counter() - t0, 4)}
            run.gaps.append(record)
    bar.close()
    if finder is not None:
        run.notes += finder.notes
    for m in sorted(skipped):
        run.notes.append(f"{m} skipped: no guide candidate ({_no_guide_reason(finder)})")
        del views[m]
        del run.outputs[m]
        run.methods.remove(m)

    # 3. Outputs, then the report.
    written: list[Path] = []
    try:
        for m, view in views.items():
            written.append(write_native(outputs[m], view.assembled(), native.info, overwrite=force))
        run.timings_s = {"total": round(time.perf_counter() - t_run, 4)}
        if report_path is not None:
            write_report(run, report_path, overwrite=force)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return run


def _fill_one(m: str, view: TrackView, i: int, guide: Guide | None, denoiser: Any, info: dict | None,
              cfg: RestoreConfig, record: GapRecord, progress: bool) -> None:
    """Fill gap ``i`` of ``view`` with method ``m`` and note the weights in ``record``."""
    done = fill_gap(m, view, i, guide, denoiser, info, cfg, seed=cfg.seed + i, progress=progress)
    view.fill(i, done.fill)
    if m == "auto":
        record.match_ratio = done.match_ratio
    if done.window is not None:
        record.w_y, record.w_guide, record.seed = done.w_y, done.w_guide, done.seed
        record.window_start_s = done.window.start / done.window.sample_rate
        record.window_length_s = done.window.length / done.window.sample_rate


def _no_guide_reason(finder: GuideFinder | None) -> str:
    if finder is None:
        return "no search was run"
    if finder.source_name == "track":
        return "the track is too short to hold a candidate with its context outside the gap's own context"
    return f"the {finder.source_name} search returned nothing usable"


def _device_name(denoiser: Any) -> str | None:
    if denoiser is None:
        return None
    try:
        return str(next(denoiser.parameters()).device)
    except (AttributeError, StopIteration, TypeError):
        return "cpu"


def _checkpoint_facts(info: dict | None) -> dict | None:
    if info is None:
        return None
    keys = ("path", "sha256", "sample_rate", "segment_samples", "step", "n_parameters")
    return {k: info[k] for k in keys if k in info}


def _version() -> str:
    from simdps import __version__

    return __version__
