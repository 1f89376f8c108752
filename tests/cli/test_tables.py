"""The CLI's tables (rich, dmg/cli/tables.py): plain text when piped, bold headers on a
terminal, key fields never cut, cell text never read as markup, --json untouched."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import uuid
from pathlib import Path

from dmg.cli.nodes_table import NODE_COLUMNS
from dmg.cli.output import column, render_table
from tests.cli.conftest import DMG, DmgRunner, clean_environ


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C as at a terminal. A child inherits an ignored SIGINT
    (a test runner's process, a script's background job), and Python then never raises
    KeyboardInterrupt for it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _watch(gateway: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(DMG), "node", "list", "--gateway", gateway, "--watch", "--every", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_environ(**env),
                            cwd=cwd, preexec_fn=_default_sigint)


def _ctrl_c(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """SIGINT, then what the watch printed until it exited; says where it was if it did not."""
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        where = [line for line in status if line.startswith(("State", "SigIgn", "SigCgt"))]
        raise AssertionError(f"the watch did not end 20 s after SIGINT: {where}") from None

NODE = {"name": "node-with-a-long-name", "status": "Limited", "version": "0.1.0", "role": "dispatcher",
        "reasons": ["cloud unreachable: connection refused to http://127.0.0.1:8050 after 3 tries",
                    "version 0.0.9 differs from the gateway's 0.1.0"],
        "running": 3, "limit": 16, "sized_by": "cgroup", "cpu_percent": 12.0,
        "memory_available": 3 * 2**30, "network_in": 1000, "network_out": 2e6,
        "credential_status": "in sync (1)", "last_heartbeat": None}


def test_a_narrow_terminal_wraps_reasons_and_keeps_every_key_field_whole() -> None:
    text = render_table([NODE], NODE_COLUMNS, terminal=True, width=80)
    lines = text.splitlines()
    assert "\x1b[1m" in lines[0]  # bold headers on a terminal
    first = lines[1]
    for value in ("node-with-a-long-name", "Limited", "0.1.0", "dispatcher", "3/16", "cgroup", "12%",
                  "3.0 GiB", "in sync (1)"):
        assert value in first, (value, first)
    words = " ".join(line.strip() for line in lines[1:])
    for word in ("unreachable:", "tries;", "differs"):
        assert word in words  # wrapped, not cut


def test_piped_tables_are_plain_and_as_wide_as_their_cells() -> None:
    text = render_table([NODE], NODE_COLUMNS)
    assert "\x1b" not in text
    header, row = text.splitlines()
    assert header.split()[:3] == ["NAME", "STATUS", "REASONS"]
    assert "connection refused to http://127.0.0.1:8050 after 3 tries; version 0.0.9" in row
    assert row.index("Limited") == header.index("STATUS")  # aligned


def test_cell_text_is_not_markup() -> None:
    text = render_table([{"a": "[bold]x[/bold] :smile:"}], [column("A", "a")])
    assert text.splitlines()[1] == "[bold]x[/bold] :smile:"


def test_the_real_cli_piped_prints_no_ansi_codes_even_when_colour_is_forced(dmg: DmgRunner) -> None:
    name = f"tables-{uuid.uuid4().hex[:6]}"
    assert dmg("gateway", "create", name).returncode == 0
    piped = dmg("gateway", "list", FORCE_COLOR="1", TERM="xterm-256color", COLUMNS="40")
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stdout
    lines = piped.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "REASONS", "VERSION", "CREATED"]
    assert any(line.startswith(f"{name} ") for line in lines[1:])  # not cut at 40 columns
    as_json = dmg("gateway", "list", "--json")
    body = json.loads(as_json.stdout)
    assert as_json.stdout == json.dumps(body, indent=2, sort_keys=True, default=str) + "\n"


def test_the_real_cli_on_a_terminal_draws_bold_headers(dmg: DmgRunner) -> None:
    name = f"tables-{uuid.uuid4().hex[:6]}"
    assert dmg("gateway", "create", name).returncode == 0
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([str(DMG), "gateway", "list"], stdout=follower, stderr=subprocess.PIPE,
                              env=clean_environ(**dmg.env, COLUMNS="120"), cwd=dmg.cwd, timeout=60)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert done.returncode == 0, done.stderr
    screen = b"".join(chunks).decode()
    assert "\x1b[1mNAME" in screen and name in screen


def test_watch_redraws_the_node_table_until_ctrl_c(dmg: DmgRunner) -> None:
    import time

    name = f"watch-{uuid.uuid4().hex[:6]}"
    created = dmg("gateway", "create", name)
    key = next(line.split()[-1] for line in created.stdout.splitlines() if line.startswith("key1: "))
    assert dmg("node", "register", "--key", key, "--name", "watched1").returncode == 0
    proc = _watch(name, dmg.env, dmg.cwd)
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while sum(1 for line in seen if line.startswith("-- ")) < 4:  # 3 whole rounds
            assert time.monotonic() < deadline, f"fewer than 4 rounds begun in 30 s: {seen}"
            seen.append(proc.stdout.readline().decode())
        rest, errors = _ctrl_c(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, errors
    text = "".join(seen) + rest.decode()
    assert "\x1b" not in text
    assert sum(1 for line in text.splitlines() if line.startswith("NAME ")) >= 3
    assert sum(1 for line in text.splitlines() if line.startswith("watched1 ")) >= 3


def test_watch_with_json_is_a_usage_error(dmg: DmgRunner) -> None:
    done = dmg("node", "list", "--watch", "--json")
    assert done.returncode == 2
    assert "--watch draws a table; leave out --json" in done.stderr and "Traceback" not in done.stderr


def test_watch_outlives_a_cloud_restart(tmp_path: Path) -> None:
    import time

    from dmg.cloud.server import start_cloud_subprocess
    from dmg.procs import free_port
    from settings import Settings

    settings = Settings(data_dir=tmp_path / "cloud-data", log_level="WARNING")
    bind = f"127.0.0.1:{free_port()}"
    cloud = start_cloud_subprocess(settings, bind=bind)
    env = {"DMG_DATA_DIR": str(tmp_path / "cli-data"), "DMG_CLOUD_URL": cloud.url,
           "DMG_API_TOKEN": cloud.api_token}
    runner = DmgRunner(env=env, cwd=tmp_path)
    assert runner("gateway", "create", "watched").returncode == 0
    proc = _watch("watched", env, tmp_path)
    lines: list[str] = []

    def read_until(text: str) -> None:
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while not any(text in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, (text, lines[-5:], proc.poll())
            lines.append(proc.stdout.readline().decode())

    try:
        read_until("no node yet")
        cloud.stop()  # given the cloud goes away
        read_until("(retrying)")  # the watch says so
        lines.clear()
        cloud = start_cloud_subprocess(settings, bind=bind)  # and when it comes back
        read_until("no node yet")  # the table is back
        _, errors = _ctrl_c(proc)
        assert proc.returncode == 0, errors
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        cloud.stop()


def test_a_piped_ascii_table_is_drawn_without_rich_and_reads_the_same() -> None:
    from dmg.cli import tables

    headers = ["ACTIVITY", "SHARD", "STATUS", "NODE", "ERROR"]
    for cells in ([], [["copy", "0", "Succeeded", "node1", ""]],
                  [["copy", "", " lead", "trail ", "x" * 90], ["a  b", "12", "-", "n", "[not markup]"]]):
        widths = tables.column_widths(headers, cells, width=None)
        assert tables._draw_plain(headers, cells, widths) == tables._draw_rich(headers, cells, widths,
                                                                               terminal=False)
    assert "\x1b" not in tables.draw(headers, [["é", "0", "ok", "n", ""]])  # not ASCII: rich, plain text
