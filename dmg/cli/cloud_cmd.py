"""``dmg cloud``: run the control plane."""

from __future__ import annotations

import click

from dmg.cli.common import current_settings, setup_logging


@click.group()
def cloud() -> None:
    """The control plane: REST API, portal and database."""


@cloud.command()
def token() -> None:
    """Print the users' API token: DMG_API_TOKEN, else the one the cloud generated
    into <data dir>/cloud/api-token (run it on the cloud's machine)."""
    from dmg.cli.common import api_token

    click.echo(api_token(current_settings()))


@cloud.command()
@click.option("--db", metavar="URL", default=None,
              help="Database URL (default: DMG_CLOUD_DB, else SQLite in the data dir).")
@click.option("--bind", metavar="HOST:PORT", default=None,
              help="Address to listen on (default: DMG_CLOUD_BIND).")
@click.option("--tls-cert", metavar="PEM", default=None,
              help="Serve HTTPS with this certificate (default: DMG_CLOUD_TLS_CERT); needs --tls-key.")
@click.option("--tls-key", metavar="PEM", default=None,
              help="The certificate's private key (default: DMG_CLOUD_TLS_KEY).")
@click.option("--workers", type=int, default=None,
              help="Processes serving the port (default: DMG_CLOUD_WORKERS, 1); more than one needs "
                   "PostgreSQL.")
def serve(db: str | None, bind: str | None, tls_cert: str | None, tls_key: str | None,
          workers: int | None) -> None:
    """Serve the cloud's API and portal in the foreground until Ctrl-C (HTTPS with
    --tls-cert and --tls-key; clients check it against DMG_CLOUD_CA)."""
    from dmg.cloud.server import parse_bind
    from dmg.cloud.server import serve as serve_cloud
    from dmg.errors import Conflict
    from dmg.procs import port_open

    settings = current_settings()
    settings = settings.replace(cloud_tls_cert=tls_cert or settings.cloud_tls_cert,
                                cloud_tls_key=tls_key or settings.cloud_tls_key,
                                cloud_workers=workers if workers is not None else settings.cloud_workers)
    bind = bind or settings.cloud_bind
    host, port = parse_bind(bind)
    if port and port_open(host if host not in ("0.0.0.0", "::", "") else "127.0.0.1", port):
        raise Conflict(f"{host}:{port} is already in use (another `dmg cloud serve`?)",
                       hint="stop it, or pick another address with --bind")
    setup_logging(settings)
    serve_cloud(settings, bind=bind, db=db or settings.cloud_db_url)
