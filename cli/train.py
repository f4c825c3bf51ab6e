"""``simdps-train``: train the score model on a folder of audio files or a MAESTRO root.

Examples::

    simdps-train --print-config > run.json                 # the defaults, to edit
    simdps-train corpus/ --out runs/small --config run.json
    simdps-train maestro-v3.0.0/ --out runs/ft --years 2017,2018 --init runs/base --model full
    simdps-train maestro-v3.0.0/ --out runs/ft --resume --steps 400000
    simdps-train corpus/ --out runs/small --resume --time-limit 60    # an hour, then a checkpoint
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from simdps.cli.common import run_main
from simdps.errors import SimDPSError

__all__ = ["main", "command"]


def _parse_years(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        years = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise SimDPSError(f"--years {text!r}: write comma-separated years, e.g. 2017,2018") from None
    if not years:
        raise SimDPSError("--years is empty; write e.g. 2017,2018")
    return years


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Checkpoint folder (config.json, ema.safetensors, train_state/, loss.csv, loss.png).")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="TrainConfig as JSON or TOML (see --print-config); missing keys take the defaults.")
@click.option("--resume", is_flag=True, help="Continue the run saved in --out from its last checkpoint.")
@click.option("--model", "model_preset", type=click.Choice(["small", "full"]),
              help="UNet preset: small (CPU, ~1-3 M parameters) or full (GPU, ~40 M); "
                   "replaces the config's model.")
@click.option("--split", type=click.Choice(["train", "validation", "test"]),
              help="MAESTRO split to train on (default: train).")
@click.option("--years", help="MAESTRO years to keep, e.g. 2017,2018 (default: all).")
@click.option("--steps", type=click.IntRange(min=0),
              help="Total steps (overrides the config; extends a resumed run).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Crops per step (overrides the config).")
@click.option("--init", "init_dir", type=click.Path(path_type=Path),
              help="Start from the weights of another checkpoint folder (fine-tuning); fresh optimizer.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), metavar="MINUTES",
              help="Stop after this many minutes with a checkpoint; --resume continues the run. "
                   "Ctrl-C and SIGTERM stop the same way.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--print-config", is_flag=True, help="Print the (effective) configuration as JSON and exit.")
def command(data, out_dir, config_file, resume, model_preset, split, years, steps, batch_size, init_dir,
            device, time_limit, no_progress, print_config):
    """Train the diffusion score model on DATA (a folder of audio files or a MAESTRO root)."""
    from simdps.diffusion.data import find_maestro_csv
    from simdps.diffusion.train import TrainConfig, train
    from simdps.diffusion.unet import UNetConfig

    years_tuple = _parse_years(years)
    overrides: dict = {}
    if model_preset is not None:
        overrides["model"] = UNetConfig.full() if model_preset == "full" else UNetConfig.small()
    if split is not None:
        overrides["maestro_split"] = split
    if years_tuple is not None:
        overrides["maestro_years"] = years_tuple
    if batch_size is not None:
        overrides["batch_size"] = batch_size

    if resume:
        if config_file is not None or overrides:
            raise SimDPSError("--resume continues with the run's saved configuration; only --steps, "
                              "--device, --time-limit and --no-progress may change")
        config = None
    else:
        config = TrainConfig.load(config_file) if config_file is not None else TrainConfig()
        config = dataclasses.replace(config, **overrides)
        if steps is not None:
            config = dataclasses.replace(config, steps=steps)

    if print_config:
        if config is None:
            raise SimDPSError("--print-config shows a new run's configuration; read --out/config.json instead")
        click.echo(json.dumps(config.to_dict(), indent=2, sort_keys=True))
        return
    if data is None:
        raise SimDPSError("give the training DATA folder (audio files or a MAESTRO root)")
    if out_dir is None:
        raise SimDPSError("give --out FOLDER for the checkpoints")
    if (split is not None or years_tuple is not None) and find_maestro_csv(data) is None:
        raise SimDPSError(f"{data}: --split/--years filter a MAESTRO root (a folder with maestro-v*.csv); "
                          "this is a plain folder, so drop them")

    history = train(data, out_dir, config, resume=resume, steps=steps if resume else None, init=init_dir,
                    device=device, progress=not no_progress, log=lambda line: click.echo(line, err=True),
                    time_limit_s=None if time_limit is None else 60.0 * time_limit)
    if history:
        tail = history[-min(len(history), 100):]
        click.echo(f"done: step {history[-1].step + 1}, mean loss of the last {len(tail)} steps "
                   f"{sum(r.loss for r in tail) / len(tail):.4g}; checkpoint in {out_dir}", err=True)
    else:
        click.echo(f"nothing to train: the run in {out_dir} already reached its steps", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``simdps-train``."""
    run_main(command, argv)


if __name__ == "__main__":
    main()
