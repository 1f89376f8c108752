"""A request body's shape (depth, size, NUL, NaN) is checked once, over the whole body:
the bodies nested in it are not walked again, and what they hold is still refused."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from dmg.cloud import schemas
from dmg.cloud.schemas import FileResults, ReportBatch
from dmg.definitions import MAX_DEPTH, MAX_ITEMS, _plainly_fine, check_shape


def batch(files: list[dict[str, Any]]) -> dict[str, Any]:
    return {"items": [{"shard_id": "s1", "files": {"attempt": 1, "node": "n", "files": files},
                       "report": {"attempt": 1, "node": "n", "status": "succeeded"}}]}


def test_a_batch_is_walked_once_and_its_nested_bodies_are_not_walked_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[Any] = []
    check = schemas.check_shape

    def counting(value: Any, **kwargs: Any) -> None:
        walked.append(value)
        check(value, **kwargs)

    monkeypatch.setattr(schemas, "check_shape", counting)
    files = [{"path": f"f{i}", "status": "copied"} for i in range(300)]

    parsed = ReportBatch.model_validate(batch(files))

    assert len(walked) == 1 and len(parsed.items[0].files.files) == 300  # type: ignore[union-attr]
    FileResults.model_validate({"attempt": 1, "files": files})  # a body of its own: walked itself
    assert len(walked) == 2


@pytest.mark.parametrize("bad", [{"path": "a\x00", "status": "copied"},
                                 {"path": "a", "status": "copied", "started": float("nan")}])
def test_what_a_nested_body_holds_is_still_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"items\[0\]\.files\.files\[1\]"):
        ReportBatch.model_validate(batch([{"path": "ok", "status": "copied"}, bad]))
    with pytest.raises(ValidationError, match=r"files\[0\]"):
        FileResults.model_validate({"attempt": 1, "files": [bad]})


def _random_value(rng: random.Random, depth: int) -> Any:
    """A JSON-like value, now and then with a fault (NUL, NaN, Infinity) in it."""
    roll = rng.random()
    if depth < 14 and roll < 0.3:
        keys = ["a", "b", "c\x00" if rng.random() < 0.02 else "c", "d"]
        return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 14 and roll < 0.55:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    nul = "y\x00z" if rng.random() < 0.05 else "y"
    nan = float("nan") if rng.random() < 0.05 else 0.5
    infinite = float("-inf") if rng.random() < 0.05 else -1
    return rng.choice(["x", nul, 1, True, None, 2.5, nan, infinite])


def _refused(value: Any, *, max_depth: int = MAX_DEPTH) -> bool:
    try:
        check_shape(value, max_depth=max_depth)
    except ValueError:
        return True
    return False


def test_the_quick_walk_passes_exactly_what_the_full_walk_passes() -> None:
    # Given random JSON-like values, some with a fault, and the limits' edges
    rng = random.Random(11)
    values = [_random_value(rng, 0) for _ in range(3000)]
    values += [{"a": [0] * (MAX_ITEMS - 3)}, {"a": [0] * (MAX_ITEMS - 2)}]  # MAX_ITEMS values, one more
    deep: Any = 0
    for _ in range(MAX_DEPTH):
        deep = [deep]
    values += [deep, [deep], {1: "not a string key"}, ("a", "tuple"), {"a": 1.5e308 * 10}]
    # When both walks judge them, Then the quick one passes a value only where the full one does
    for value in values:
        if _plainly_fine(value, MAX_DEPTH):
            assert not _refused(value), value
    # and on JSON values (no tuple, no non-string key) they agree both ways
    for value in values[:-3]:
        assert _plainly_fine(value, MAX_DEPTH) == (not _refused(value)), value
    assert _refused(values[3001]) and not _refused(values[3000])
    refused = sum(_refused(value) for value in values[:3000])
    assert 100 < refused < 2900, refused  # both kinds were judged
