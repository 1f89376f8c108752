"""The one shard-status vocabulary: every Redis state, outcome and cloud status maps."""

from __future__ import annotations

import re

import pytest

from dmg.cloud.schemas import ShardReport
from dmg.shards import status
from dmg.shards.status import (
    CLOUD_AFTER_OUTCOME,
    CLOUD_FINISHED,
    CLOUD_PLACED,
    CLOUD_PLANNED,
    CLOUD_REPORTED,
    CLOUD_STATUSES,
    OUTCOMES,
    STATE_AFTER_OUTCOME,
    STATE_QUEUED,
    STATES,
    STATES_ENDED,
    cloud_status,
)


@pytest.mark.parametrize("state", STATES)
def test_every_redis_state_maps_to_a_cloud_status(state: str) -> None:
    assert cloud_status(state, node="a") in CLOUD_STATUSES
    assert cloud_status(state, node="") in CLOUD_STATUSES


def test_queued_is_planned_until_a_node_holds_it() -> None:
    assert cloud_status(STATE_QUEUED, node="") == CLOUD_PLANNED
    assert cloud_status(STATE_QUEUED, node="a") == CLOUD_PLACED


def test_an_unknown_state_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown shard state 'paused'; expected one of queued, pending"):
        cloud_status("paused", node="a")


def test_every_outcome_maps_to_a_redis_state_and_a_cloud_report() -> None:
    assert set(STATE_AFTER_OUTCOME) == set(CLOUD_AFTER_OUTCOME) == set(OUTCOMES)
    for outcome in OUTCOMES:
        state, reported = STATE_AFTER_OUTCOME[outcome], CLOUD_AFTER_OUTCOME[outcome]
        assert (state is None) == (reported is None)  # stale/duplicate touch neither
        if state is not None:
            assert state in STATES_ENDED and reported in CLOUD_FINISHED
            assert cloud_status(state, node="a") == reported


def test_the_cloud_accepts_exactly_the_statuses_a_node_reports() -> None:
    accepted = ShardReport.model_fields["status"].annotation.__args__  # type: ignore[union-attr]
    assert tuple(accepted) == CLOUD_REPORTED
    assert set(CLOUD_STATUSES) == {CLOUD_PLANNED, *CLOUD_REPORTED}


def test_the_docstring_table_names_every_word() -> None:
    doc = status.__doc__ or ""
    for word in (*STATES, *CLOUD_STATUSES, *OUTCOMES):
        assert re.search(rf"``{word}``", doc), word
