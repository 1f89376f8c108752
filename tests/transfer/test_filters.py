"""Include/exclude globs on paths relative to the activity's source."""

from __future__ import annotations

import pytest

from dmg.errors import BadInput
from dmg.transfer.filters import PathFilter

PATHS = ["a.csv", "b.txt", "logs/app.log", "logs/old/app.log", "data/x.csv", "data/deep/y.csv",
         "tmp/t.csv", "data/tmp/u.csv", "[x].csv"]


@pytest.mark.parametrize(("include", "exclude", "kept"), [
    ([], [], PATHS),
    (["*.csv"], [], ["a.csv", "data/x.csv", "data/deep/y.csv", "tmp/t.csv", "data/tmp/u.csv", "[x].csv"]),
    (["/*.csv"], [], ["a.csv", "[x].csv"]),
    (["data/*.csv"], [], ["data/x.csv"]),
    (["data/**"], [], ["data/x.csv", "data/deep/y.csv", "data/tmp/u.csv"]),
    (["**/tmp/*"], [], ["tmp/t.csv", "data/tmp/u.csv"]),
    ([], ["tmp/"], [p for p in PATHS if p != "tmp/t.csv"]),
    ([], ["*.log", "*.txt"], ["a.csv", "data/x.csv", "data/deep/y.csv", "tmp/t.csv", "data/tmp/u.csv",
                              "[x].csv"]),
    (["*.csv"], ["data/**"], ["a.csv", "tmp/t.csv", "[x].csv"]),  # exclude wins
    (["?.csv"], [], ["a.csv", "data/x.csv", "data/deep/y.csv", "tmp/t.csv", "data/tmp/u.csv"]),
    (["/?.csv"], [], ["a.csv"]),
    (["[ab].*"], [], ["a.csv", "b.txt"]),
    (["/[!a].*"], [], ["b.txt"]),
    (["[[]x].csv"], [], ["[x].csv"]),
])
def test_globs_select_paths(include: list[str], exclude: list[str], kept: list[str]) -> None:
    assert PathFilter(include, exclude).select(PATHS) == kept


def test_a_malformed_glob_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unclosed"):
        PathFilter(["data/[abc"])
    with pytest.raises(BadInput, match="empty"):
        PathFilter([], ["/"])
