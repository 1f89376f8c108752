"""The chaos run's checker: what counts as lost, duplicated and corrupted.

A small workload is generated, its sinks are filled by hand as a perfect copy would
fill them, then spoilt one way at a time; the verdict must name each spoiling.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.chaos_data import COLUMNS, Plan, Workload, build, engine_for
from bench.chaos_verify import verify


@pytest.fixture
def workload(tmp_path: Path) -> Workload:
    plan = Plan(activities=10, files_per_activity=4, large_files=1, large_mib=0.1, bandwidth=0,
                large_bandwidth=0, sql_bandwidth=0, rows_per_shard=5, seed=3)
    made = build(tmp_path / "data", plan)
    for source, sink in made.expected.file_dirs:  # a perfect copy
        shutil.copytree(source, sink)
    for key, tables in made.expected.tables.items():
        engine = engine_for(made.databases[key])
        with engine.begin() as conn:
            for table, rows in tables.items():
                conn.execute(sa.text(f'CREATE TABLE "{table}" (id TEXT, name TEXT, qty TEXT, cents TEXT)'))
                conn.execute(sa.text(f'INSERT INTO "{table}" VALUES (:id, :name, :qty, :cents)'),
                             [dict(zip(COLUMNS, row, strict=True)) for row in rows.values()])
        engine.dispose()
    return made


def some_table(workload: Workload, kind: str) -> tuple[str, str, int]:
    table, rows = sorted(workload.expected.tables[kind].items())[0]
    return workload.databases[kind], table, sorted(rows)[0]


def execute(url: str, statement: str) -> None:
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def test_a_perfect_copy_is_clean(workload: Workload) -> None:
    verdict = verify(workload)

    assert verdict.clean and verdict.examples == []
    assert verdict.files == len(workload.expected.files) + workload.expected.source_files
    assert verdict.rows == workload.expected.rows > 0
    assert set(workload.kinds) == {"file", "csv", "jsonl", "sql"}


def test_a_missing_file_is_lost_a_changed_one_corrupted_an_extra_one_duplicated(workload: Workload) -> None:
    first, second = sorted(workload.expected.files)[:2]
    first.unlink()
    second.write_bytes(b"not what the source holds")
    (second.parent / ".dmg-staging.x.1.f000.bin").write_bytes(b"left by a dead attempt")

    verdict = verify(workload)

    assert (verdict.lost, verdict.corrupted, verdict.duplicated) == (1, 1, 1)
    assert verdict.staging_leftovers == 1
    assert not verdict.clean


def test_a_row_twice_is_duplicated_a_missing_one_lost_a_changed_one_corrupted(workload: Workload) -> None:
    url, table, key = some_table(workload, "sql")
    execute(url, f"INSERT INTO \"{table}\" SELECT * FROM \"{table}\" WHERE id = '{key}'")
    url, table, key = some_table(workload, "csv")
    execute(url, f"DELETE FROM \"{table}\" WHERE id = '{key}'")
    url, table, key = some_table(workload, "jsonl")
    execute(url, f"UPDATE \"{table}\" SET qty = '-1' WHERE id = '{key}'")

    verdict = verify(workload)

    assert (verdict.lost, verdict.duplicated, verdict.corrupted) == (1, 1, 1), verdict.examples


def test_a_missing_table_loses_all_its_rows(workload: Workload) -> None:
    url, table, _key = some_table(workload, "csv")
    execute(url, f'DROP TABLE "{table}"')

    verdict = verify(workload)

    assert verdict.lost == len(workload.expected.tables["csv"][table])
