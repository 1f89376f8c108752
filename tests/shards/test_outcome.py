"""The shard outcome: round trip, the Celery task's result, a malformed outcome refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dmg.shards import MalformedOutcome, ShardOutcome
from dmg.shards.status import OUTCOME_CANCELLED, OUTCOME_SUCCEEDED


def test_an_outcome_round_trips_and_its_task_result_keeps_the_previous_keys() -> None:
    outcome = ShardOutcome(OUTCOME_CANCELLED, "a", 3, "ar1-00000", files=2, bytes=10,
                           error="the run was cancelled")

    assert ShardOutcome.from_json(json.loads(json.dumps(outcome.to_json()))) == outcome
    result = outcome.task_result()
    assert result == {"status": "cancelled", "node": "a", "attempt": 3, "files": 2, "bytes": 10}
    assert ShardOutcome.from_json(result) == ShardOutcome(OUTCOME_CANCELLED, "a", 3, "", 2, 10)


@pytest.mark.parametrize(("body", "message"), [
    ([], "expected an object, got list"),
    ({"status": OUTCOME_SUCCEEDED, "node": "a"}, "missing field 'attempt'"),
    ({"status": OUTCOME_SUCCEEDED, "node": "a", "attempt": "x"}, "ValueError"),
    ({"status": "done", "node": "a", "attempt": 1}, "unknown status 'done'"),
])
def test_a_malformed_outcome_is_refused_with_one_clear_line(body: Any, message: str) -> None:
    with pytest.raises(MalformedOutcome, match="shard outcome is malformed") as refused:
        ShardOutcome.from_json(body)
    assert message in str(refused.value) and "\n" not in str(refused.value)
