"""``dmg pipeline`` and ``dmg runs``: define pipelines, run them, follow the runs."""

from __future__ import annotations

from typing import Any

import click

from dmg.cli.common import read_json_file, user_client
from dmg.cli.lazygroup import LazyGroup
from dmg.cli.output import (
    column,
    computed,
    duration_between,
    emit_json,
    emit_table,
    human_duration,
    human_time,
)


@click.group()
def pipeline() -> None:
    """Pipelines: named lists of copy activities run by one gateway."""


@pipeline.command()
@click.argument("file", metavar="FILE.json")
@click.option("--json", "as_json", is_flag=True, help="Print the stored pipeline as JSON.")
def create(file: str, as_json: bool) -> None:
    """Create the pipeline defined in FILE.json.

    \b
    {"name": "nightly", "gateway": "site",
     "activities": [{"name": "copy", "source": {"store": "src", "path": "in"},
                     "sink": {"store": "dst", "path": "out"}, "options": {}}]}
    """
    from dmg.cli.specs import check_pipeline

    body = check_pipeline(read_json_file(file, what="pipeline"), source=file)
    with user_client() as client:
        stored = client.create_pipeline(body)
    _warn(stored)
    if as_json:
        emit_json(stored)
    else:
        click.echo(f"pipeline {body['name']} created for gateway {body['gateway']} "
                   f"({len(body['activities'])} activities)")
        click.echo(f"next: dmg pipeline run {body['name']} --wait")


def _warn(answer: dict[str, Any]) -> None:
    """Print the cloud's warnings (e.g. a local path on a multi-node gateway) to stderr."""
    from dmg.cli.runflow import warn

    warn(answer)


@pipeline.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_pipelines(as_json: bool) -> None:
    """List the pipelines the cloud holds."""
    with user_client() as client:
        rows = client.list_pipelines()
    columns = [column("NAME", "name"), column("GATEWAY", "gateway"),
               computed("ACTIVITIES", lambda r: str(len(r.get("activities") or [])))]
    emit_table(rows, columns, as_json=as_json, empty="no pipeline yet: dmg pipeline create FILE.json")


@pipeline.command()
@click.argument("name")
@click.option("--wait", is_flag=True, help="Follow the run until it ends; exit 1 if it failed.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="With --wait: give up after this many seconds (exit 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def run(name: str, wait: bool, timeout: float | None, as_json: bool) -> None:
    """Run pipeline NAME; with --wait, show live progress and then every shard."""
    from dmg.cli.runflow import run_pipeline

    with user_client() as client:
        code = run_pipeline(client, name, wait=wait, timeout=timeout, as_json=as_json)
    if code:
        raise click.exceptions.Exit(code)


@click.group(cls=LazyGroup, lazy_subcommands={"report": "dmg.cli.report_cmd:report",
                                              "bandwidth": "dmg.cli.report_cmd:bandwidth"})
def runs() -> None:
    """Pipeline runs: their activity runs and shards."""


def _run_duration(row: dict[str, Any]) -> str:
    if not row.get("started_at"):
        return "-"
    return human_duration(duration_between(row.get("started_at"), row.get("ended_at")))


@runs.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_runs(limit: int, as_json: bool) -> None:
    """List the latest runs, newest first."""
    with user_client() as client:
        rows = client.list_runs(limit=limit)
    columns = [column("RUN", "id"), column("PIPELINE", "pipeline"), column("GATEWAY", "gateway"),
               column("STATUS", "status"), column("CREATED", "created_at", human_time),
               computed("DURATION", _run_duration)]
    emit_table(rows, columns, as_json=as_json, empty="no run yet: dmg pipeline run NAME")


@runs.command()
@click.argument("run_id")
@click.option("--attempts", "with_attempts", is_flag=True,
              help="Also list every attempt of every shard: node, placed, started, ended, how it ended.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run as JSON (with --attempts, its `attempts` too).")
def show(run_id: str, with_attempts: bool, as_json: bool) -> None:
    """Show run RUN_ID: every activity run and shard (status, node, files, bytes, duration)."""
    from dmg.cli.runview import print_attempts, print_run

    with user_client() as client:
        body = client.run(run_id)
        if with_attempts:
            body["attempts"] = client.run_attempts(run_id)
    if as_json:
        emit_json(body)
        return
    print_run(body)
    if with_attempts:
        print_attempts(body["attempts"])


@runs.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the cancelled run as JSON.")
def cancel(run_id: str, as_json: bool) -> None:
    """Cancel run RUN_ID: queued shards never start, running ones stop and leave no
    staging files; files already committed stay. A run that already ended is an error."""
    with user_client() as client:
        body = client.cancel_run(run_id)
    if as_json:
        emit_json(body)
    else:
        click.echo(f"run {body['id']} cancelled ({body['status']}); its running shards stop within seconds")
