"""``dmg cloud``: run the control plane."""

from __future__ import annotations

import click

from dmg.cli.common import current_settings, setup_logging


@click.group()
def cloud() -> None:
    """The control plane: REST API, portal and database."""


@cloud.command()
@click.option("--db", metavar="URL", default=None,
              help="Database URL (default: DMG_CLOUD_DB, else SQLite in the data dir).")
@click.option("--bind", metavar="HOST:PORT", default=None,
              help="Address to listen on (default: DMG_CLOUD_BIND).")
def serve(db: str | None, bind: str | None) -> None:
    """Serve the cloud's API and portal in the foreground until Ctrl-C."""
    settings = current_settings()
    setup_logging(settings)
    from dmg.cloud.server import serve as serve_cloud

    serve_cloud(settings, bind=bind or settings.cloud_bind, db=db or settings.cloud_db_url)
