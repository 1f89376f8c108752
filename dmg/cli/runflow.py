"""``dmg pipeline run NAME``: start a run and, with ``--wait``, follow it to its end.

Shared by the click command (:mod:`dmg.cli.pipeline_cmd`) and the fast path
(:mod:`dmg.cli.fastpath`), so both print the same and exit the same; no click here.
"""

from __future__ import annotations

from typing import Any

from dmg.cli.echo import echo
from dmg.cli.output import emit_json
from dmg.cloud.client import CloudClient


def warn(answer: dict[str, Any]) -> None:
    """Print the cloud's warnings (e.g. a local path on a multi-node gateway) to stderr."""
    for warning in answer.get("warnings") or []:
        echo(f"warning: {warning}", err=True)


def run_pipeline(client: CloudClient, name: str, *, wait: bool, timeout: float | None, as_json: bool) -> int:
    """Run pipeline ``name``; -> the exit code (1: the run did not succeed). Raises
    :mod:`dmg.errors` (Fatal when ``timeout`` s passed first: the run goes on)."""
    from dmg.cli.runview import ProgressPrinter, print_run, wait_for_run
    from dmg.errors import Fatal

    started = client.run_pipeline(name)
    warn(started)
    run_id = str(started["id"])
    if not wait:
        if as_json:
            emit_json(started)
        else:
            echo(f"run {run_id} of pipeline {name}: {started.get('status', 'Queued')}")
            echo(f"follow it: dmg runs show {run_id}")
        return 0
    if not as_json:
        echo(f"run {run_id} of pipeline {name} started", err=True)
    printer = ProgressPrinter()
    try:
        final = wait_for_run(client, run_id, timeout=timeout, on_progress=None if as_json else printer)
    except TimeoutError as exc:
        raise Fatal(str(exc), hint=f"it goes on in the background: dmg runs show {run_id}") from None
    finally:
        printer.finish()
    if as_json:
        emit_json(final)
    else:
        print_run(final)
    return 0 if final.get("status") == "Succeeded" else 1
