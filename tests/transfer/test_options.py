"""An activity's options: defaults, accepted spellings, and a clear error for a bad one."""

from __future__ import annotations

import pytest

from dmg.errors import BadInput
from dmg.transfer.options import CopyOptions, parse_rate


def test_defaults_are_incremental_verified_and_unlimited() -> None:
    options = CopyOptions.from_json({})
    assert options.overwrite == "if-different" and options.verify == "auto" and options.bandwidth == 0
    assert options == CopyOptions.from_json(None) == CopyOptions()
    assert CopyOptions.from_json(options.to_json()) == options


def test_booleans_and_spellings_are_accepted() -> None:
    assert CopyOptions.from_json({"overwrite": True}).overwrite == "always"
    assert CopyOptions.from_json({"overwrite": False}).overwrite == "never"
    assert CopyOptions.from_json({"overwrite": "If_Newer"}).overwrite == "if-newer"
    assert CopyOptions.from_json({"verify": False}).verify == "off"
    assert CopyOptions.from_json({"verify": "re-read"}).verify == "re-read"
    assert CopyOptions.from_json({"include": "*.csv"}).include == ("*.csv",)
    assert CopyOptions.from_json({"parallel_files": "8"}).parallel_files == 8
    assert CopyOptions.from_json({"unknown": 1, "format": "csv"}) == CopyOptions()


@pytest.mark.parametrize(("value", "rate"), [(0, 0), (1000, 1000), ("512K", 512 * 1024), ("10M", 10 * 2**20),
                                             ("2.5MiB/s", int(2.5 * 2**20)), ("1g", 2**30), (12.7, 12)])
def test_rates_read_as_bytes_per_second(value: object, rate: int) -> None:
    assert parse_rate(value) == rate


@pytest.mark.parametrize(("options", "words"), [
    ({"overwrite": "sometimes"}, "option 'overwrite' is 'sometimes'"),
    ({"verify": "maybe"}, "option 'verify'"),
    ({"bandwidth": "fast"}, "'fast' is not a rate"),
    ({"bandwidth": -1}, "between 0 and 2^62"),
    ({"bandwidth": True}, "bytes per second"),
    ({"include": [1]}, "option 'include' must be a list of glob patterns"),
    ({"exclude": {"a": 1}}, "option 'exclude'"),
    ({"parallel_files": 0}, "option 'parallel_files' must be from 1 to 64"),
    ({"parallel_files": 2.5}, "must be an integer"),
    ({"part_size": 10}, "option 'part_size'"),
    ({"retries": "many"}, "option 'retries'"),
    ({"retry_backoff": -1}, "option 'retry_backoff'"),
])
def test_a_bad_option_is_bad_input_naming_it(options: dict[str, object], words: str) -> None:
    with pytest.raises(BadInput) as caught:
        CopyOptions.from_json(options)
    assert words in str(caught.value)
