"""Who removes a fenced attempt's staging when its node never returns (workers.run.leftovers).

Given a shard whose attempt 1 began on node ``dead`` (listed in ``started:dead``) and
left a staging file beside its target, when a newer attempt has written every file,
then the newer attempt's node removes that staging and forgets it; it never touches
the staging of its own or of a newer attempt, and does nothing once it is itself
fenced (a newer attempt may be writing).
"""

from __future__ import annotations

from pathlib import Path

from dmg.connectors import connector_for
from dmg.site.state import SiteState
from tests.sitekit import beat
from tests.workers.support import file_store, shard_spec, write_files
from workers.run.leftovers import clean_fenced_staging

SHARD = "run1-00000"


def arrange(tmp_path: Path, state: SiteState) -> Path:
    """The shard (two files under ``in``, sink ``out``) with attempt 1 on ``dead`` and its
    staging file for ``out/a.bin``; attempt 2 on ``b``. Returns the sink's root."""
    write_files(tmp_path / "src" / "in", {"a.bin": 100, "b.bin": 100})
    sink = file_store("dst", tmp_path / "dst")
    state.save_shard(SHARD, shard_spec(SHARD, file_store("src", tmp_path / "src"), "in", sink, "out"))
    for node in ("dead", "b"):
        beat(state, node, 1)
    assert state.new_attempt(SHARD, "dead") == 1
    state.redis.sadd(state.keys.started("dead"), f"{SHARD}.1")
    (tmp_path / "dst" / "out").mkdir(parents=True)
    (tmp_path / "dst" / "out" / f".dmg-staging.{SHARD}.1.a.bin").write_bytes(b"x" * 50)
    assert state.new_attempt(SHARD, "b") == 2
    state.redis.sadd(state.keys.started("b"), f"{SHARD}.2")
    (tmp_path / "dst" / "out" / f".dmg-staging.{SHARD}.2.b.bin").write_bytes(b"y" * 50)
    return tmp_path / "dst"


def staging(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".dmg-staging*"))


def test_the_newer_attempt_removes_the_dead_attempts_staging(tmp_path: Path, state: SiteState) -> None:
    root = arrange(tmp_path, state)

    assert clean_fenced_staging(state, SHARD, 2, connector_factory=connector_for) == 1

    assert staging(root) == [f".dmg-staging.{SHARD}.2.b.bin"]  # its own is its own business
    assert state.started("dead") == set()
    assert state.started("b") == {f"{SHARD}.2"}


def test_a_fenced_attempt_removes_nothing(tmp_path: Path, state: SiteState) -> None:
    root = arrange(tmp_path, state)
    assert state.new_attempt(SHARD, "b") == 3  # attempt 2 is fenced: attempt 3 may be writing

    assert clean_fenced_staging(state, SHARD, 2, connector_factory=connector_for) == 0
    assert clean_fenced_staging(state, SHARD, 1, connector_factory=connector_for) == 0

    assert len(staging(root)) == 2
    assert state.started("dead") == {f"{SHARD}.1"}
