"""A file result's row form (:mod:`dmg.cloud.filerows`) says what its object form says:
the node builds rows from FileResult JSON, the cloud checks each value as it checks the
object's field of the same name."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from dmg.cloud.filerows import ROW_FIELDS, as_result, as_row
from dmg.cloud.limits import FILE_RESULT_DEFAULTS
from dmg.cloud.schemas import FileResultIn, FileResults, FileRowIn
from dmg.transfer import FileResult

FULL = FileResult("dst/a", 8192, "xxh3:0123456789abcdef", "failed", "disk full", source="src/a",
                  verified="size,xxh3", tries=3, started=1.7e9, ended=1.7e9 + 0.25).to_json()


def test_a_row_holds_every_field_of_the_object_in_order() -> None:
    assert set(ROW_FIELDS) == set(FileResultIn.model_fields) == set(FULL)
    assert len(get_args(FileRowIn)) == len(ROW_FIELDS)
    assert as_row({**FULL, "node": "w", "attempt": 2}) == [FULL[name] for name in ROW_FIELDS]
    assert as_result(as_row(FULL)) == FULL


def test_a_field_left_out_of_the_object_is_the_cloud_s_default_in_the_row() -> None:
    row = as_result(as_row({"path": "p", "status": "copied"}))
    assert {k: v for k, v in row.items() if k not in ("path", "status")} == FILE_RESULT_DEFAULTS


PROBES: dict[str, list[Any]] = {
    "path": ["", "a", "a" * 4096, "a" * 4097, None, 1],
    "source": ["", "a" * 4096, "a" * 4097, None],
    "bytes": [-1, 0, 2**62, 2**62 + 1, 1.5, "1", None],
    "checksum": ["x" * 64, "x" * 65],
    "status": ["copied", "skipped", "failed", "moved", None],
    "verified": ["x" * 64, "x" * 65],
    "error": ["e" * 4096, "e" * 4097],
    "tries": [-1, 0, 2**31 - 1, 2**31],
    "started": [None, 0.0, 1.7e9, 2, "soon"],
    "ended": [None, 1.7e9, float("inf"), float("nan")],
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in PROBES.items() for v in values])
def test_a_row_value_is_taken_or_refused_as_the_object_s_field(name: str, value: Any) -> None:
    result = {**FULL, name: value}

    def taken(body: dict[str, Any]) -> bool:
        try:
            FileResults.model_validate(body)
        except ValidationError:
            return False
        return True

    as_object = taken({"attempt": 1, "files": [result]})
    as_a_row = taken({"attempt": 1, "rows": [[result[n] for n in ROW_FIELDS]]})
    assert as_a_row == as_object, (name, value, as_object)
