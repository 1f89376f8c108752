"""bench/profile_summary.py: py-spy's collapsed stacks charged to the right role and area."""

from __future__ import annotations

from pathlib import Path

from bench.profile_summary import area_of, summary, tally

NODE = 'process 10:"dmg node start"'
WORKER = 'process 11:"celery worker"'
POOL = 'process 12:"celery worker"'  # a pool process forked after the roles were read


def test_samples_go_to_the_sampled_process_role_and_its_innermost_area(tmp_path: Path) -> None:
    raw = tmp_path / "py-spy-10.txt"
    raw.write_text("\n".join([
        f"{NODE};_lead (dispatcher/loop.py:10);execute (sqlalchemy/orm/session.py:5) 6",
        f"{NODE};_lead (dispatcher/loop.py:12);read (redis/connection.py:7) 2",
        f"{NODE};{WORKER};on_readable (kombu/transport/redis.py:3) 3",
        f"{NODE};{WORKER};{POOL};run_shard (workers/run/shard.py:4);realpath (<frozen posixpath>:9) 5",
        "a line that is not a stack",
    ]) + "\n")
    roles = {10: "dispatcher", 11: "celery worker main"}

    tallied = tally([raw, tmp_path / "missing.txt"], roles)

    assert {role: entry["samples"][""] for role, entry in tallied.items()} == {
        "dispatcher": 8, "celery worker main": 3, "celery worker main child": 5}
    assert tallied["dispatcher"]["areas"] == {"sqlalchemy": 6, "redis": 2}
    # one function, two lines: counted once per stack, together
    assert tallied["dispatcher"]["functions"]["_lead (dispatcher/loop.py)"] == 8
    assert tallied["celery worker main child"]["areas"] == {"posixpath": 5}
    text = summary([raw], roles)
    assert text.index("dispatcher: 8 samples") < text.index("celery worker main child: 5 samples")
    assert "sqlalchemy 75%" in text


def test_areas_name_dmg_layers_and_libraries() -> None:
    assert area_of("claim (dmg/cloud/service/dispatch.py:1)") == "dmg/cloud"
    assert area_of("place (dispatcher/placement.py:1)") == "dispatcher"
    assert area_of("_gcd_import (<frozen importlib._bootstrap>:1)") == "import"
    assert area_of("dumps (json/__init__.py:1)") == "json"
