"""``simdps-restore TRACK --gap START:END [--gap ...]``: fill the gaps of a recording."""

from __future__ import annotations

import click

from simdps.cli.common import GAP, run_main

__all__ = ["command", "main"]

_METHODS = ["lpc", "sim", "dps", "simdps-l", "simdps-h", "auto", "all"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("track", type=click.Path(dir_okay=False, path_type=str))
@click.option("--gap", "gaps", type=GAP, multiple=True, required=True,
              help="A missing interval START:END in seconds (12.5:14.5) or mm:ss.s-mm:ss.s; repeat for several.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Output file [default: TRACK.restored.<ext>; with --method all, TRACK.restored.<method>.<ext>].")
@click.option("--index", type=click.Path(path_type=str), default=None,
              help="Also search this corpus index (built by simdps-index) for the guide.")
@click.option("--method", type=click.Choice(_METHODS, case_sensitive=False), default="auto", show_default=True,
              help="lpc, sim, dps, simdps-l, simdps-h, auto (w_guide from the match quality), or all (one file each).")
@click.option("--guide-audio", type=str, default=None, metavar="FILE[@START_S]",
              help="Take the guide from this recording (searched for its best position, or at START_S).")
@click.option("--checkpoint", type=click.Path(path_type=str), default=None,
              help="Model folder (config.json + ema.safetensors) [default: the model shipped with SimDPS].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"], case_sensitive=False), default="auto",
              show_default=True, help="Where the diffusion model runs.")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True,
              help="Diffusion sampler steps (paper: 50).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler noise seed (gap i uses SEED + i).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write a JSON report of what was done to each gap.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for the model [default: torch's, one per core]. On a machine busy with other "
                   "work, 1 is often faster (threads that wait on each other stall).")
@click.option("--force", is_flag=True, help="Replace existing output and report files.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(track, gaps, output, index, method, guide_audio, checkpoint, device, steps, seed, report, threads,
            force, quiet) -> None:
    """Fill the gaps of TRACK; every sample outside them stays bit-exact.

    \b
    Example:
      simdps-restore examples/chorale.flac --gap 5:7
    """
    from simdps.restore import restore

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    run = restore(track, gaps, output=output, method=method, index=index, guide_audio=guide_audio,
                  checkpoint=checkpoint, device=device, steps=steps, seed=seed, report=report, force=force,
                  progress=not quiet)
    for note in run.notes:
        click.echo(f"note: {note}", err=True)
    for m, path in run.outputs.items():
        click.echo(f"{m}: {path}")
    if report:
        click.echo(f"report: {report}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``simdps-restore``."""
    run_main(command, argv)


if __name__ == "__main__":
    main()
