"""``dmg up`` (an embedded site in the foreground) and ``dmg demo`` (a copy through it)."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import click

from dmg.cli.common import current_settings


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt inside the block (even when SIGINT was
    ignored, as for a background job of a script)."""

    def on_signal(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored inside the block (a clean stop must finish)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(line: str) -> None:
    click.echo(line, err=True)


def _stop(site: Any) -> None:
    with _uninterruptible():
        _say("stopping the site ...")
        site.stop()
        _say("stopped: nothing left running")


@click.command()
@click.option("--nodes", type=click.IntRange(1, 32), default=2, show_default=True, help="How many nodes.")
@click.option("--gateway", default="site", show_default=True, help="The gateway (created if missing).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Concurrent jobs limit of each node (default: sized to the machine).")
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
@click.option("--no-restart", is_flag=True,
              help="Leave a process that died down (default: restart it, 1 s back-off doubling to 30 s).")
@click.option("--tls", is_flag=True,
              help="Encrypt everything with a throw-away CA made in <data dir>/tls: Redis on TLS only, "
                   "the cloud on HTTPS, the gateway's encryption mode tls.")
def up(nodes: int, gateway: str, concurrency: int | None, no_flower: bool, no_restart: bool,
       tls: bool) -> None:
    """Run an embedded site in the foreground until Ctrl-C.

    Starts Redis (AOF on), the cloud, gateway GATEWAY, nodes node1..nodeN and
    Flower, all under the data dir, and supervises them: a process that dies is
    reported and started again (unless --no-restart) while the rest keeps running.
    Kill a node by the pid printed here to watch a failover. Ctrl-C or SIGTERM
    stops every one of them.
    """
    from dmg.embedded.site import EmbeddedSite
    from dmg.embedded.supervisor import Supervisor

    settings = current_settings()
    site = EmbeddedSite(settings, nodes=nodes, gateway=gateway, flower=not no_flower,
                        node_concurrency=concurrency, echo=_say, tls=tls)
    with _interruptible():
        try:
            site.start()
        except KeyboardInterrupt:
            _say("interrupted while starting; everything started was stopped")
            raise click.exceptions.Exit(130) from None
        try:
            _print_welcome(site, restart=not no_restart)
            supervisor = Supervisor(site, say=_say, restart=not no_restart)
            while True:
                supervisor.tick()
                time.sleep(0.5)
        except KeyboardInterrupt:
            _say("")
        finally:
            _stop(site)


def _print_welcome(site: Any, *, restart: bool) -> None:
    gateway, nodes = site.gateway, site.node_names
    click.echo("")
    click.echo(f"site up: gateway {gateway}, {len(nodes)} nodes Online")
    for line in site.describe():
        click.echo(f"  {line}")
    click.echo("  pids:       " + ", ".join(f"{name} {site.pid_of(name)}"
                                             for name in ("redis", "cloud", *nodes, "flower")
                                             if site.pid_of(name) is not None))
    click.echo("")
    click.echo("in another terminal:")
    click.echo(f"  export DMG_DATA_DIR={site.data_dir} DMG_CLOUD_URL={site.settings.cloud_url} "
               f"DMG_REDIS_URL={site.settings.redis_url}")
    if site.tls:
        click.echo(f"  export DMG_CLOUD_CA={site.settings.cloud_ca} "
                   f"DMG_REDIS_TLS_CA={site.settings.redis_tls_ca}")
    victim = nodes[-1]
    for command, comment in (
            (f"dmg gateway show {gateway}", ""), (f"dmg node list --gateway {gateway}", ""),
            ("dmg store add store.json", '{"name", "type": "file", "location"}'),
            ("dmg pipeline create pipeline.json", ""), ("dmg pipeline run NAME --wait", ""),
            ("dmg runs list", ""), (f"dmg scale {nodes[0]} --concurrency 8", "live, no restart"),
            (f"kill -9 {site.pid_of(victim)}", f"{victim} dies: watch `dmg node list`, then its restart"),
            ("dmg demo", "(after stopping this site)")):
        click.echo(f"  {command:<34} # {comment}" if comment else f"  {command}")
    click.echo("")
    if restart:
        click.echo("A process that dies is restarted (back-off 1 s, doubling to 30 s). "
                   "Ctrl-C stops the site.")
    else:
        click.echo("A process that dies is left down (--no-restart). Ctrl-C stops the site.")


@click.command()
@click.option("--nodes", type=click.IntRange(1, 32), default=2, show_default=True, help="How many nodes.")
@click.option("--files", "small_files", type=click.IntRange(min=0), default=300, show_default=True,
              help="How many small files (1-64 KiB) to generate.")
@click.option("--large-files", type=click.IntRange(min=0), default=4, show_default=True,
              help="How many large files (8-32 MiB) to generate.")
@click.option("--gateway", default="site", show_default=True, help="The gateway (created if missing).")
@click.option("--json", "as_json", is_flag=True, help="Print the run and the summary as JSON.")
def demo(nodes: int, small_files: int, large_files: int, gateway: str, as_json: bool) -> None:
    """Copy a generated folder through an embedded site and check it byte for byte.

    Starts a site like `dmg up`, generates the folder under <data dir>/demo,
    adds two file stores and a pipeline, runs it, prints every shard and a
    summary, verifies the copy, and stops the site. Exits 0 only if the run
    succeeded and the copy matches.
    """
    from dmg.embedded.site import EmbeddedSite

    settings = current_settings()
    site = EmbeddedSite(settings, nodes=nodes, gateway=gateway, flower=False, echo=_say)
    with _interruptible():
        try:
            site.start()
        except KeyboardInterrupt:
            _say("interrupted while starting; everything started was stopped")
            raise click.exceptions.Exit(130) from None
        try:
            ok = _run_demo(site, small_files=small_files, large_files=large_files, as_json=as_json)
        except KeyboardInterrupt:
            _say("")
            ok = False
        finally:
            _stop(site)
    if not ok:
        raise click.exceptions.Exit(1)


def _run_demo(site: Any, *, small_files: int, large_files: int, as_json: bool) -> bool:
    import shutil

    from dmg.cli.demo import compare_trees, generate_tree
    from dmg.cli.output import emit_json, human_bytes
    from dmg.cli.runview import ProgressPrinter, print_run, summary, wait_for_run
    from dmg.errors import Conflict

    root = site.data_dir / "demo"
    source, sink = root / "source", root / "sink"
    shutil.rmtree(root, ignore_errors=True)
    sink.mkdir(parents=True)
    _say(f"generating {small_files} small and {large_files} large files in {source} ...")
    made = generate_tree(source, small_files=small_files, large_files=large_files)
    _say(f"generated {made.files} files, {human_bytes(made.bytes)}")

    stores: list[dict[str, Any]] = [
        {"name": "demo-source", "type": "file", "location": str(source), "options": {}},
        {"name": "demo-sink", "type": "file", "location": str(sink), "options": {}}]
    pipeline = {"name": "demo", "gateway": site.gateway, "activities": [
        {"name": "copy-folder", "source": {"store": "demo-source", "path": ""},
         "sink": {"store": "demo-sink", "path": ""}, "options": {}}]}
    with site.client() as client:
        for store in stores:
            try:
                client.add_store(store)
            except Conflict:  # kept from an earlier demo in this data dir: same location?
                known = {str(s.get("name")): s for s in client.list_stores()}
                if known.get(store["name"], {}).get("location") != store["location"]:
                    raise
        try:
            client.create_pipeline(pipeline)
        except Conflict:
            known = {str(p.get("name")): p for p in client.list_pipelines()}
            if known.get("demo", {}).get("gateway") != site.gateway:
                raise
        run_id = str(client.run_pipeline("demo")["id"])
        _say(f"run {run_id} started")
        printer = ProgressPrinter()
        try:
            final = wait_for_run(client, run_id, on_progress=None if as_json else printer)
        finally:
            printer.finish()
    diff = compare_trees(source, sink)
    totals = summary(final)
    if as_json:
        emit_json({"run": final, "summary": totals,
                   "verified": {"matches": diff.matches, "files": diff.compared, "bytes": diff.bytes,
                                "missing": diff.missing, "extra": diff.extra, "different": diff.different}})
    else:
        click.echo("")
        print_run(final)
        click.echo("")
        verdict = "OK" if diff.matches else "MISMATCH"
        click.echo(f"verify: {verdict}: {diff.describe()} ({human_bytes(diff.bytes)} compared)")
        if len(totals["nodes"]) < len(site.node_names):
            click.echo(f"note: only {len(totals['nodes'])} of {len(site.node_names)} nodes ran shards")
    return bool(final.get("status") == "Succeeded" and diff.matches)
