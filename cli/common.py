"""What every command shares: user errors printed without a traceback, gap parsing for click."""

from __future__ import annotations

import sys
from typing import Any

import click

from simdps.errors import SimDPSError
from simdps.gaps import Gap, parse_gap

__all__ = ["GAP", "run_main"]


class _GapType(click.ParamType):
    name = "START:END"

    def convert(self, value: Any, param: Any, ctx: Any) -> Gap:
        if isinstance(value, Gap):
            return value
        try:
            return parse_gap(value)
        except SimDPSError as exc:
            self.fail(str(exc), param, ctx)


GAP = _GapType()


def run_main(command: click.Command, argv: list[str] | None = None) -> None:
    """Run a click command; a :class:`SimDPSError` prints ``error: ...`` and exits 2, no traceback."""
    try:
        command.main(args=argv, standalone_mode=False)
    except SimDPSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
