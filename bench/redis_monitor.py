"""Who sends what to the site's Redis: every command of a small bulk run, by sender.

    .venv/bin/python bench/redis_monitor.py [--count 50] [--nodes 2] [--top 60]

An embedded site (as ``bench/activities.py`` starts it) runs ``count`` one-empty-file
activities while ``redis-cli monitor`` records every command the site's Redis executes.
Each command is charged to:

* its **process**: the client's port is matched (psutil, sampled while the run goes) to a
  process of the site: ``node start`` (a node's agent and dispatcher candidate; the lease
  holder's is marked ``dispatcher``), ``celery worker`` (a node's Celery main process:
  kombu's consumer, the events it sends, the result backend), ``pool`` (a prefork child
  running dmg's task), ``cloud``;
* its **script**, for a command run inside a Lua script (``[0 lua]`` in the monitor's
  output, printed right after the ``EVALSHA``/``EVAL`` that ran it): the script's name is found from
  its SHA1 among the scripts of dmg, the dispatcher and the workers;
* its **key pattern**: the first key with ids and numbers replaced (``<id>``, ``<n>``).

Printed: commands per activity by (process, command, key pattern, script), the busiest first,
and the totals per process and per script. The counts include everything the site did
during the run (heartbeats, loads, presence looks): a small run shows their share at its
own pace.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Activities per pipeline (a pipeline holds at most 256).
PIPELINE_SIZE = 200
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from activities import empty_files, lease_holder  # noqa: E402

from dmg.embedded.site import EmbeddedSite  # noqa: E402
from dmg.procs import stop_process  # noqa: E402
from settings import load  # noqa: E402
from settings.redistls import broker_password  # noqa: E402

#: Modules whose module-level strings holding ``redis.call`` are Lua scripts.
SCRIPT_MODULES = ("dmg.site.scripts", "dispatcher.lease", "workers.resultstore", "workers.run.outbox",
                  "dispatcher.placement", "dispatcher.reports", "workers.agent.autoscale")
LINE = re.compile(r'^(?P<ts>[\d.]+) \[(?P<db>\d+) (?P<client>[^\]]+)\] (?P<rest>.*)$')
IDS = [(re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
       (re.compile(r"[0-9a-f]{16,}"), "<hex>"), (re.compile(r"\d+"), "<n>")]
#: Commands whose first argument is not a key (EVAL, EVALSHA: the index of the key count).
NO_KEY = {"publish": 0, "evalsha": 1, "eval": 1, "client": None, "info": None, "ping": None,
          "select": None, "multi": None, "exec": None, "script": None, "hello": None, "auth": None}


def script_names() -> dict[str, str]:
    """SHA1 -> ``module.NAME`` of every Lua script we know of."""
    names: dict[str, str] = {}
    for module_name in SCRIPT_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for attr, value in vars(module).items():
            if isinstance(value, str) and "redis.call" in value:
                names[hashlib.sha1(value.encode()).hexdigest()] = f"{module_name.rsplit('.', 1)[-1]}.{attr}"
    return names


def pattern(text: str) -> str:
    for regex, repl in IDS:
        text = regex.sub(repl, text)
    return text


def key_of(command: str, args: list[str]) -> str:
    if command in NO_KEY:
        index = NO_KEY[command]
        if index is None:
            return (args[0].lower() if args and command in ("client", "script") else "")
        if command == "publish":
            return "channel " + pattern(args[0]) if args else ""
        return pattern(args[index + 1]) if len(args) > index + 1 and args[index] != "0" else ""
    return pattern(args[0]) if args else ""


class PortBook:
    """Local TCP port -> pid of every client connection to ``port``, sampled in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.pids: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == self.port and conn.pid:
                self.pids[conn.laddr.port] = conn.pid

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.1)

    def __enter__(self) -> PortBook:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def process_roles(site: EmbeddedSite) -> dict[int, str]:
    """pid -> what it is, for every process of the site."""
    import psutil

    leader = lease_holder(site)
    roles: dict[int, str] = {}
    cloud = site.pid_of("cloud")
    if cloud:
        roles[cloud] = "cloud"
    for name in site.node_names:
        pid = site.pid_of(name)
        if not pid:
            continue
        roles[pid] = f"{name} start" + (" (dispatcher)" if name == leader else "")
        for child in psutil.Process(pid).children(recursive=True):
            cmdline = " ".join(child.cmdline())
            parent = child.ppid()
            if parent in roles and "worker" in roles[parent]:
                roles[child.pid] = f"{name} pool"
            elif "celery" in cmdline or "worker" in cmdline:
                roles[child.pid] = f"{name} celery worker"
            else:
                roles[child.pid] = f"{name} child"
    return roles


def parse(path: Path, ports: dict[int, int], roles: dict[int, str], shas: dict[str, str]) -> list[tuple]:
    """(process, command, key pattern, script) of every command recorded."""
    rows: list[tuple] = []
    caller = ("unknown", "?")  # the script whose commands follow (Redis prints them after it)
    for line in path.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if not match:
            continue
        try:
            words = shlex.split(match["rest"])
        except ValueError:
            words = match["rest"].split()
        if not words:
            continue
        command, args = words[0].lower(), words[1:]
        client = match["client"]
        if client == "lua":
            rows.append((caller[0], command, key_of(command, args), caller[1]))
            continue
        port = int(client.rsplit(":", 1)[-1]) if ":" in client else 0
        who = roles.get(ports.get(port, 0), "unknown")
        script = ""
        if command in ("evalsha", "eval") and args:
            sha = args[0] if command == "evalsha" else hashlib.sha1(args[0].encode()).hexdigest()
            script = shas.get(sha, f"sha {sha[:8]}")
            caller = (who, script)
        rows.append((who, command, key_of(command, args), script))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--top", type=int, default=80)
    parser.add_argument("--keep", default="", help="copy the raw monitor output here")
    args = parser.parse_args()
    shas = script_names()
    with tempfile.TemporaryDirectory(prefix="dmg-monitor-") as tmp:
        work = Path(tmp)
        settings = load({"DMG_DATA_DIR": str(work / "data")})
        with EmbeddedSite(settings, nodes=args.nodes, flower=False,
                          node_concurrency=args.concurrency) as site:
            source, sink = empty_files(work, args.count)
            host, port = site.settings.redis_url.rsplit("/", 1)[0].rsplit("//", 1)[-1].rsplit(":", 1)
            with site.client() as client:
                client.add_store({"name": "msrc", "type": "file", "location": str(source)})
                client.add_store({"name": "mdst", "type": "file", "location": str(sink)})
                activities = [{"name": f"a{i}", "source": {"store": "msrc", "path": f"f{i:05d}"},
                               "sink": {"store": "mdst", "path": f"out{i:05d}"}} for i in range(args.count)]
                chunks = [activities[i:i + PIPELINE_SIZE] for i in range(0, args.count, PIPELINE_SIZE)]
                for k, chunk in enumerate(chunks):
                    client.create_pipeline({"name": f"bulk{k}", "gateway": site.gateway, "activities": chunk})
                time.sleep(1.0)
                out = work / "monitor.txt"
                with open(out, "wb") as fh, PortBook(int(port)) as book:
                    monitor = subprocess.Popen(
                        ["redis-cli", "-h", host.split("@")[-1], "-p", port, "--no-auth-warning",
                         "-a", broker_password(site.settings), "monitor"], stdout=fh)
                    time.sleep(0.5)
                    started = time.monotonic()
                    run_ids = [client.run_pipeline(f"bulk{k}")["id"] for k in range(len(chunks))]
                    for run_id in run_ids:
                        while client.run(run_id)["status"] not in ("Succeeded", "Failed"):
                            time.sleep(0.05)
                    elapsed = time.monotonic() - started
                    time.sleep(2.0)  # reports still travelling
                    stop_process(monitor, timeout=5)
                roles = process_roles(site)
            if args.keep:
                Path(args.keep).write_bytes(out.read_bytes())
            rows = parse(out, book.pids, roles, shas)
    n = args.count
    print(f"{len(rows) / n:.1f} commands per activity ({len(rows)} in {elapsed:.2f} s of run + 2 s), "
          f"{n} activities, {args.nodes} nodes")
    for title, index in (("by process", (0,)), ("by script (commands inside it, the call included)", (3,)),
                         ("by process and command", (0, 1))):
        print(f"\n{title}:")
        counts = Counter(tuple(row[i] for i in index) for row in rows)
        for key, value in counts.most_common():
            if value / n >= 0.02:
                print(f"  {value / n:7.2f}  {' | '.join(k or '-' for k in key)}")
    print("\nby process, command, key pattern, script:")
    for (who, command, key, script), value in Counter(rows).most_common(args.top):
        print(f"  {value / n:7.2f}  {who:28} {command:10} {key:44} {script}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
