"""``dmg runs report`` and ``dmg runs bandwidth``: a run's per-file report, its bandwidth limit.

``dmg runs report RUN_ID`` streams the run's per-file report (JSON Lines: path,
bytes, checksum, status, node, attempt, ... per file) from the cloud to stdout or,
with ``--output FILE``, to a file that appears complete or not at all.

``dmg runs bandwidth RUN_ID RATE`` changes the bandwidth limit of a run's activity
runs while they run. It writes the limit into the site's Redis (``DMG_REDIS_URL``)
directly, as the nodes do: like them, it runs inside the site, and the cloud never
needs a way into the site. Every shard re-reads the limit about once a second;
the limit holds for each activity run as a whole, across all its nodes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import click

from dmg.cli.common import current_settings, user_client
from dmg.cli.output import human_bytes
from dmg.errors import BadInput, BrokerError, Retryable


@click.command("report")
@click.argument("run_id")
@click.option("--output", "-o", metavar="FILE", default=None,
              help="Write the report to FILE (replaced only when complete) instead of stdout.")
@click.option("--status", type=click.Choice(["copied", "skipped", "failed"]), default=None,
              help="Only the files with this status.")
def report(run_id: str, output: str | None, status: str | None) -> None:
    """Download the per-file report of run RUN_ID as JSON Lines.

    \b
    One object per file: run, activity, activity_run, shard, shard_index, path,
    source, bytes, checksum (MD5), status (copied|skipped|failed), verified,
    error, node, attempt, tries, started_at, ended_at.
    """
    with user_client() as client:
        lines = client.iter_run_report(run_id, status=status)
        if output is None:
            out: BinaryIO = sys.stdout.buffer
            for line in lines:
                out.write(line)
            out.flush()
            return
        count = _write_atomically(Path(output), lines)
    click.echo(f"{count} file(s) written to {output}", err=True)


def _write_atomically(path: Path, lines: Any) -> int:
    """Write ``lines`` to a temporary file beside ``path``, then rename it over ``path``."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise BadInput(f"cannot write {path}: {directory} is not a directory",
                       hint="create the directory or give another --output")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror}") from None
    count = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for line in lines:
                fh.write(line)
                count += 1
        os.replace(tmp, path)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return count


@click.command("bandwidth")
@click.argument("run_id")
@click.argument("rate")
@click.option("--activity", "activities", multiple=True, metavar="NAME",
              help="Only this activity (repeatable); default: every activity of the run.")
def bandwidth(run_id: str, rate: str, activities: tuple[str, ...]) -> None:
    """Set the bandwidth limit of run RUN_ID to RATE bytes/s while it runs.

    RATE is a number of bytes per second, with an optional K, M or G (powers of
    1024): 1048576, 512K, 10M. 0 removes the limit. Run it inside the site: it
    writes the limit to the site's Redis (DMG_REDIS_URL).
    """
    from dmg.transfer.options import parse_rate

    limit = parse_rate(rate, what="RATE")
    with user_client() as client:
        run = client.run(run_id)
    activity_runs = list(run.get("activity_runs") or [])
    names = {str(a.get("name")) for a in activity_runs}
    unknown = sorted(set(activities) - names)
    if unknown:
        raise BadInput(f"run {run_id} has no activity named {', '.join(unknown)}",
                       hint=f"its activities: {', '.join(sorted(names)) or 'none'}")
    chosen = [a for a in activity_runs if not activities or a.get("name") in activities]
    _set_limits(str(run["gateway"]), [str(a["id"]) for a in chosen], limit)
    what = human_bytes(limit) + "/s" if limit else "no limit"
    click.echo(f"bandwidth of run {run_id} set to {what} for {', '.join(str(a['name']) for a in chosen)}; "
               "running shards apply it within about a second")
    if run.get("status") in ("Succeeded", "Failed", "Cancelled"):
        click.echo(f"note: the run has already ended ({run['status']})", err=True)


def _set_limits(gateway: str, activity_run_ids: list[str], limit: int) -> None:

    from dmg.site.connection import redis_client
    from dmg.site.state import SiteState

    settings = current_settings()
    client = redis_client(settings, timeout=5)
    try:
        state = SiteState(client, gateway)
        for activity_run_id in activity_run_ids:
            state.set_bandwidth(activity_run_id, limit)
    except BrokerError as exc:
        where = client.connection_pool.connection_kwargs
        target = (f"at {where.get('host')}:{where.get('port')}" if where.get("host")
                  else f"(Sentinel group {settings.redis_master_name!r})")
        raise Retryable(f"cannot reach the site's Redis {target} "
                        f"({type(exc.__cause__ or exc).__name__})",  # redis-py's, as before
                        hint="run this on a node of the site, with DMG_REDIS_URL set as the nodes have it"
                        ) from None
    finally:
        client.close()


