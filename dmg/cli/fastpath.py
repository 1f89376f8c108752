"""The ``dmg`` console script: ``dmg pipeline run NAME --wait`` without click.

The command a user waits on most imports click (inspect, uuid, platform, gettext...) for
one fixed form. :func:`main` recognizes that form exactly — ``pipeline run NAME --wait``
with ``--json`` and ``--timeout SECONDS`` (a plain non-negative number) in any order,
each at most once — and runs it through the same code as the click command
(:func:`dmg.cli.runflow.run_pipeline`), with the same messages and exit codes
(:mod:`dmg.cli.failures`). Anything else (``--help``, ``--debug``, another command, an
option repeated or unknown, a name that starts with ``-``) goes to click
(:func:`dmg.cli.main.main`), which words usage errors.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from dmg.cli.echo import echo
from dmg.cli.failures import one_line, quiet_broken_pipe, unexpected


@dataclass(frozen=True)
class WaitRun:
    """``dmg pipeline run NAME --wait [--json] [--timeout SECONDS]``."""

    name: str
    timeout: float | None = None
    as_json: bool = False


def _seconds(text: str) -> float | None:
    """``text`` as seconds when it is a plain non-negative decimal (else click decides)."""
    return float(text) if text.replace(".", "", 1).isdigit() else None


def recognize(args: list[str]) -> WaitRun | None:
    """The fast form ``args`` has, or None (click handles them)."""
    if args[:2] != ["pipeline", "run"]:
        return None
    names: list[str] = []
    seen: dict[str, str] = {}
    rest = iter(args[2:])
    for arg in rest:
        option, has_value, value = arg.partition("=")
        if option == "--timeout":
            value = value if has_value else next(rest, "")
            if _seconds(value) is None:
                return None
        elif has_value or option not in ("--wait", "--json"):
            if arg.startswith("-") or not arg:
                return None
            names.append(arg)
            continue
        if option in seen:
            return None
        seen[option] = value
    if len(names) != 1 or "--wait" not in seen:
        return None
    timeout = _seconds(seen["--timeout"]) if "--timeout" in seen else None
    return WaitRun(name=names[0], timeout=timeout, as_json="--json" in seen)


def run(command: WaitRun) -> int:
    """Run ``command``; -> the exit code, every failure worded as :mod:`dmg.cli.main` does."""
    import settings
    from dmg.errors import DmgError

    try:
        try:
            from dmg.cli.cloudaccess import user_client
            from dmg.cli.runflow import run_pipeline

            with user_client(settings.load()) as client:
                return run_pipeline(client, command.name, wait=True, timeout=command.timeout,
                                    as_json=command.as_json)
        finally:
            sys.stdout.flush()  # here, where a closed pipe can still be handled
    except BrokenPipeError:
        quiet_broken_pipe()
        return 1
    except (DmgError, settings.SettingsError) as exc:
        echo(f"error: {one_line(str(exc))}", err=True)
        return 1
    except KeyboardInterrupt:
        echo("Aborted!", err=True)
        return 1
    except Exception as exc:
        echo(f"error: {unexpected(exc)}", err=True)
        return 2


def main(argv: list[str] | None = None) -> None:
    """Run ``dmg`` with ``argv`` (default: ``sys.argv[1:]``); exits the process."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = recognize(args)
    if command is None:
        from dmg.cli.main import main as click_main

        click_main(args)
        return
    sys.exit(run(command))
