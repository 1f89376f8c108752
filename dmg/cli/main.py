"""``dmg``: the entry point (``dmg.cli.main:main``) and top-level error handling.

Any :class:`dmg.errors.DmgError` or :class:`settings.SettingsError` raised by a
command is printed as one line, ``error: <message> (<hint>)``, on stderr and the
process exits 1; never a traceback. An unexpected exception is also one line
(exit 2) unless ``dmg --debug`` asks for the traceback. A reader that closed the pipe
(``dmg runs report RUN | head -1``) is not an error: dmg exits 1 without a word, as
Python's documentation recommends ("Note on SIGPIPE", :mod:`signal`).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from dmg.cli.common import CliState
from dmg.cli.failures import one_line, quiet_broken_pipe, unexpected
from dmg.cli.lazygroup import LazyGroup
from dmg.errors import DmgError
from settings import SettingsError


class CommandFailed(click.ClickException):
    """A failure already worded for the user; shown as ``error: ...``, exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", file=file or sys.stderr)


class UnexpectedFailure(CommandFailed):
    """An exception dmg did not expect (a bug); exit 2."""

    exit_code = 2


class DmgGroup(LazyGroup):
    """The top group: translates errors raised anywhere below it."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            quiet_broken_pipe()
            raise click.exceptions.Exit(1) from None
        except (DmgError, SettingsError) as exc:
            raise CommandFailed(one_line(str(exc))) from exc
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            obj = ctx.find_object(CliState)
            if obj is not None and obj.debug:
                raise
            raise UnexpectedFailure(unexpected(exc)) from exc


#: Every top-level command, imported when it is used (:mod:`dmg.cli.lazygroup`).
COMMANDS = {
    "cloud": "dmg.cli.cloud_cmd:cloud",
    "gateway": "dmg.cli.gateway_cmd:gateway",
    "node": "dmg.cli.node_cmd:node",
    "store": "dmg.cli.store_cmd:store",
    "credentials": "dmg.cli.credentials_cmd:credentials",
    "pipeline": "dmg.cli.pipeline_cmd:pipeline",
    "runs": "dmg.cli.pipeline_cmd:runs",
    "scale": "dmg.cli.scale_cmd:scale",
    "up": "dmg.cli.site_cmd:up",
    "demo": "dmg.cli.site_cmd:demo",
}


@click.group(cls=DmgGroup, lazy_subcommands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
@click.version_option(package_name="dmg", prog_name="dmg", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """dmg: a data movement gateway.

    A site runs several nodes forming one logical gateway; one elected node
    (the dispatcher) pulls work from the cloud and places shards on nodes.
    Settings come from DMG_* variables (see README.md).
    """
    ctx.obj = CliState(debug=debug)


def main(argv: list[str] | None = None) -> None:
    """Run ``dmg`` with ``argv`` (default: ``sys.argv[1:]``); exits the process."""
    try:
        try:
            cli.main(args=argv, prog_name="dmg")
        finally:
            sys.stdout.flush()  # here, where a closed pipe can still be handled
    except BrokenPipeError:
        quiet_broken_pipe()
        sys.exit(1)
