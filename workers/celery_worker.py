"""The node's Celery worker process, started without Celery's command line.

``python -m workers.celery_worker -n <node>@<gateway> -Q node.<node> -c <limit>
[--loglevel INFO] [--quiet]`` runs what ``celery -A workers.app worker -P prefork -E
--without-gossip --without-mingle`` runs — ``app.Worker(...).start()``, the same
bootsteps, signals and pool — but does not import ``celery.bin``: Celery's command line
loads every installed command plugin when it starts (Flower's, with Tornado; click-repl,
with prompt-toolkit), about 25 MiB in the worker's main process that each pool child
would then carry too. Exits with the worker's exit code; a bad argument exits 2 with one
line, as any command line does.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers.celery_worker",
                                     description="Run a dmg node's Celery worker (prefork pool).")
    parser.add_argument("-n", "--hostname", required=True, help="<node>@<gateway>")
    parser.add_argument("-Q", "--queues", required=True, help="queues, comma-separated")
    parser.add_argument("-c", "--concurrency", type=int, required=True, help="pool processes")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--quiet", action="store_true", help="no banner")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from workers.app import app

    worker = app.Worker(hostname=args.hostname, queues=[q for q in args.queues.split(",") if q],
                        pool="prefork", concurrency=args.concurrency, loglevel=args.loglevel,
                        task_events=True, without_gossip=True, without_mingle=True,
                        optimization="default", quiet=args.quiet, no_color=None)
    worker.start()
    return int(worker.exitcode or 0)


if __name__ == "__main__":
    sys.exit(main())
