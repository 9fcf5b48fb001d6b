"""The `rlhf` command line: one typer app; each area registers its commands from its own module.

Only typer is imported here. Command modules import their backend (sqlmodel, pandas, torch)
inside the command bodies, so `rlhf --help` stays well under a second and commands that do
not train never import torch.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="rlhf",
    help="RLHF Studio: annotate model outputs, measure agreement, train reward models and policies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_BAD_INPUT = 2
"""Exit code for bad input (malformed file, missing column, unknown model path, ...)."""


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print `message` to stderr and return the Exit to raise: `raise fail("...")`."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    """RLHF Studio: annotate model outputs, measure agreement, train reward models and policies."""
    if version:
        from rlhf import __version__

        typer.echo(__version__)
        raise typer.Exit()


def _register_commands() -> None:
    # Each module adds its commands to `app` on import; the order is the order in --help.
    import importlib

    for module in ("foundation", "users", "generation", "stats", "training", "policy", "jobs", "simulation", "judge", "selection"):
        try:
            importlib.import_module(f"rlhf.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rlhf.cli.{module}":
                raise


_register_commands()


def main() -> None:
    app(prog_name="rlhf")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
