"""``simdps-eval``: restore gapped excerpts of test recordings with every method and score them.

    simdps-eval RECORDINGS_DIR --out DIR [--excerpts N] [--excerpt-s 6] [--gap-s 2]
                [--methods lpc,sim,dps,simdps-l,simdps-h,auto] [--index DIR]
                [--checkpoint PATH] [--seed N] [--steps N] [--mushra]
"""

from __future__ import annotations

import click

from simdps.cli.common import run_main
from simdps.errors import SimDPSError

__all__ = ["command", "main"]


def _methods(ctx, param, value: str) -> tuple[str, ...]:
    from simdps.evaluation.runner import parse_methods

    try:
        return parse_methods(value)
    except SimDPSError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("recordings_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder (created; an existing one is resumed).")
@click.option("--excerpts", "count", default=10, show_default=True, type=click.IntRange(min=1),
              help="Number of excerpts, spread over the recordings.")
@click.option("--excerpt-s", default=6.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Excerpt length in seconds (paper: 6).")
@click.option("--gap-s", default=2.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Central gap length in seconds (paper: 2).")
@click.option("--methods", default="lpc,sim,dps,simdps-l,simdps-h,auto", show_default=True, callback=_methods,
              help="Comma-separated methods to compare, or 'all'.")
@click.option("--index", "index_dir", default=None, type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Also retrieve guides from this index (simdps-index build).")
@click.option("--checkpoint", default=None, type=click.Path(exists=True, dir_okay=True, path_type=str),
              help="Diffusion model checkpoint (default: the shipped model).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds excerpt choice and sampling.")
@click.option("--steps", default=None, type=click.IntRange(min=1),
              help="Diffusion sampler steps (default: the paper's 50).")
@click.option("--device", default=None, help="Torch device for the model (default: cuda if available, else cpu).")
@click.option("--mushra", is_flag=True, help="Also write a webMUSHRA listening test (LPC is its low anchor).")
@click.option("--mushra-pages", default=1, show_default=True, type=click.IntRange(min=1),
              help="Pages per excerpt in the listening test (the paper used 2).")
@click.option("--mushra-rate", default=48_000, show_default=True, type=click.IntRange(min=8000),
              help="Sample rate of the listening-test stimuli (the listeners' device rate).")
@click.option("--no-notes", is_flag=True, help="Skip the note-level score even if basic-pitch is installed.")
@click.option("--no-plots", is_flag=True, help="Skip the box plots.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(recordings_dir, out_dir, count, excerpt_s, gap_s, methods, index_dir, checkpoint, seed, steps,
            device, mushra, mushra_pages, mushra_rate, no_notes, no_plots, quiet) -> None:
    """Cut N excerpts with a central gap from RECORDINGS_DIR, restore each gap with every
    method (guides retrieved from the rest of each track, and the index if given), score
    each restoration against the original inside the gap, and write scores.csv,
    summary.md, box plots and the restored audio under --out."""
    from simdps.evaluation.excerpts import ExcerptConfig
    from simdps.evaluation.mushra import MushraConfig
    from simdps.evaluation.runner import EvalConfig, run_evaluation

    config = EvalConfig(
        excerpts=ExcerptConfig(count=count, excerpt_s=excerpt_s, gap_s=gap_s, seed=seed),
        methods=methods,
        index=index_dir,
        checkpoint=checkpoint,
        steps=steps,
        device=device,
        notes=not no_notes,
        plots=not no_plots,
        mushra=MushraConfig(pages_per_excerpt=mushra_pages, sample_rate=mushra_rate) if mushra else None,
    )
    result = run_evaluation(recordings_dir, out_dir, config, progress=not quiet)
    click.echo(f"scores:  {result.scores_csv}")
    click.echo(f"summary: {result.summary_md}")
    if not no_plots:
        click.echo(f"plots:   {result.plots_dir}")
    click.echo(f"audio:   {result.audio_dir}")
    if result.mushra_yaml is not None:
        click.echo(f"webMUSHRA config: {result.mushra_yaml}")
    for line in result.notes:
        click.echo(f"note: {line}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``simdps-eval``."""
    run_main(command, argv)
