"""A request body's shape (depth, size, NUL, NaN) is checked once, over the whole body:
the bodies nested in it are not walked again, and what they hold is still refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dmg.cloud import schemas
from dmg.cloud.schemas import FileResults, ReportBatch


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
