"""``python -m dmg.cloud serve [--bind HOST:PORT] [--db URL] [--workers N] [--settings-stdin]`` and
``python -m dmg.cloud token`` (print the users' API token)."""

from __future__ import annotations

import argparse
import sys

import settings as settings_mod
from dmg.cloud.keys import api_token
from dmg.cloud.server import serve, settings_from_json
from dmg.errors import DmgError
from dmg.logsetup import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmg.cloud", description="dmg's control plane")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve the REST API and portal")
    serve_cmd.add_argument("--bind", default=None, help="HOST:PORT (default: DMG_CLOUD_BIND)")
    serve_cmd.add_argument("--db", default=None, help="database URL (default: DMG_CLOUD_DB or SQLite)")
    serve_cmd.add_argument("--workers", type=int, default=None,
                           help="processes serving the port (default: DMG_CLOUD_WORKERS, 1); "
                                "more than one needs PostgreSQL")
    serve_cmd.add_argument("--settings-stdin", action="store_true",
                           help="read the settings as JSON from stdin (used by start_cloud_subprocess)")
    commands.add_parser("token", help="print the users' API token")
    args = parser.parse_args(argv)
    try:
        if getattr(args, "settings_stdin", False):
            settings = settings_from_json(sys.stdin.read())
        else:
            settings = settings_mod.load()
        if args.command == "token":
            print(api_token(settings))
            return 0
        if args.workers is not None:
            settings = settings.replace(cloud_workers=args.workers)
        setup_logging(settings)
        serve(settings, bind=args.bind or settings.cloud_bind, db=args.db)
    except DmgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except settings_mod.SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
