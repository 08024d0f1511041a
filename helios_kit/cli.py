"""The `helios` command line: one click group; each subcommand lives in `helios_kit/commands/`.

Errors a user can cause (:class:`helios_kit.errors.HeliosError`) end in one line on stderr and a non-zero
exit, never a traceback. Subcommand modules are imported lazily so `helios --help` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click
from pydantic import ValidationError

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
        except ValidationError as error:
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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    from helios_kit.redact import install as install_redaction

    install_redaction()  # no log level prints credentials, tokens or signatures (botocore's -v dumps)


def main() -> None:
    cli(prog_name="helios")


if __name__ == "__main__":
    main()
