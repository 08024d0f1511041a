"""The `helios` command line: one click group; each subcommand lives in `helios_kit/commands/`.

Errors a user can cause (:class:`helios_kit.errors.HeliosError`) end in one line on stderr and a non-zero
exit, never a traceback. Subcommand modules are imported lazily so `helios --help` stays fast.

The `helios` executable (:func:`main`) keeps Python's cyclic garbage collector out of start-up: importing
click, pydantic and its models and the command's modules makes some 70k container objects that live until
exit, and each full collection during start-up walks all of them and finds nothing. The collector is off
until the subcommand's module is imported; then what start-up made is frozen (``gc.freeze``: later
collections never walk it, and a full collection during a render holds the GIL while the lanes' threads
wait on their browsers) and the collector is back on. At exit the heap is frozen again, so the interpreter's
final collection does not walk it either (41 ms -> 8 ms for a render's heap). Measured on
`helios render examples/titles` (60 frames, 2 lanes, 16 alternating runs): 2667 -> 2633 ms mean.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import sys
from typing import Any

import click

from helios_kit import __version__
from helios_kit.errors import HeliosError

#: name → "module:attribute" of each top-level command.
COMMANDS: dict[str, tuple[str, str]] = {
    "render": ("helios_kit.commands.render:render_command", "Render a composition to video, or plan a job."),
    "batch": ("helios_kit.commands.batch:batch_command", "Render one video per row of props (one DAG, resumable)."),
    "merge": ("helios_kit.commands.merge:merge_command", "Join chunk files into one video (stream copy)."),
    "job": ("helios_kit.commands.job:job_group", "Validate, run and track JobSpecs."),
    "worker": ("helios_kit.commands.worker:worker_group", "Run chunks as a stateless worker."),
    "plugins": ("helios_kit.commands.plugins:plugins_command", "List loaded plugins and what they register."),
    "store": ("helios_kit.commands.store:store_group", "Look after an artifact store (gc)."),
    "dashboard": ("helios_kit.commands.dashboard:dashboard_command", "Watch runs live in a browser."),
}


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class HeliosGroup(click.Group):
    """A click group that loads subcommands lazily and turns user errors into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        reference, short_help = COMMANDS[cmd_name]
        module_name, _, attribute = reference.partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            return _unavailable(cmd_name, short_help, error)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HeliosError as error:
            fail(str(error), error.exit_code)
        except ValueError as error:  # pydantic's ValidationError is one; imported here, after start-up
            from pydantic import ValidationError

            if not isinstance(error, ValidationError):
                raise
            from helios_kit.spec import format_validation_error

            fail(format_validation_error(error))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def _unavailable(name: str, short_help: str, error: Exception) -> click.Command:
    @click.command(name, short_help=f"{short_help} (unavailable)", context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        fail(f"'helios {name}' is not available: {error}", 1)

    return command


@click.group(cls=HeliosGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="helios")
@click.option("-v", "--verbose", is_flag=True, help="Log more (debug details on stderr).")
def cli(verbose: bool) -> None:
    """helios: render browser compositions (HTML, CSS, canvas, WAAPI) to video, frame-exact."""
    _end_startup()  # click calls this once the subcommand's module is imported, before the subcommand runs
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    from helios_kit.redact import install as install_redaction

    install_redaction()  # no log level prints credentials, tokens or signatures (botocore's -v dumps)


#: True from :func:`main`'s start until the subcommand is about to run: the collector is off meanwhile.
_starting_up = False


def main() -> None:
    """The `helios` executable: the click group with the collector kept out of start-up and exit (see the
    module docstring). Tests call :data:`cli` through click's runner, which leaves the collector alone."""
    global _starting_up
    gc.disable()
    _starting_up = True
    atexit.register(gc.freeze)
    cli(prog_name="helios")


def _end_startup() -> None:
    """Freeze what start-up made and turn the collector back on (only when :func:`main` turned it off)."""
    global _starting_up
    if _starting_up:
        _starting_up = False
        gc.freeze()
        gc.enable()


if __name__ == "__main__":
    main()
