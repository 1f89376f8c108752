"""Id formats shared by the dispatcher, the state, the engine and the connectors.

A leaf module (it imports nothing of ours), so that the site state, the transfer
engine and every connector spell an id the same way without importing each other.

==================  ===============================  ==========================
id                  format                           example
==================  ===============================  ==========================
shard id            ``<activity run>-<index:05d>``   ``ar1-00003``
staging id          ``<shard id>.<attempt>``         ``ar1-00003.2``
commit key          the shard part of a staging id   ``ar1-00003``
split object id     ``<activity run>:<index>``       ``ar1:0``
==================  ===============================  ==========================

A staging id names one attempt's staged writes; a sink that fences its commits
with a marker keys the marker by the commit key, so a shard replayed by a newer
attempt commits each target at most once (:mod:`dmg.site.fencing`).
"""

from __future__ import annotations


def shard_id(activity_run_id: str, index: int) -> str:
    """The id of the ``index``-th shard of an activity run."""
    return f"{activity_run_id}-{index:05d}"


def staging_id(shard_id: str, attempt: int) -> str:
    """The staging id of one attempt of a shard: ``<shard id>.<attempt>``."""
    return f"{shard_id}.{int(attempt)}"


def commit_key(staging: str) -> str:
    """The shard part of a staging id (``s-00001`` of ``s-00001.3``); other ids unchanged."""
    head, dot, tail = staging.rpartition(".")
    return head if dot and head and tail.isdigit() else staging


def split_object_id(activity_run_id: str, index: int) -> str:
    """The id of the ``index``-th split object of an activity run (:mod:`dmg.site.splits`)."""
    return f"{activity_run_id}:{int(index)}"
