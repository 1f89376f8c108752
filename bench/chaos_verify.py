"""After the chaos: every file and row of the sinks against the sources.

- a file of the source missing from the sink, or a row whose key is absent: **lost**;
- a row whose key is there more than once (each extra copy), a file or row in the sink
  that the source does not have (a staging file left behind counts too): **duplicated**;
- a file whose bytes differ, a row whose values differ: **corrupted**.
"""

from __future__ import annotations

import filecmp
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bench.chaos_data import COLUMNS, Expected, Workload, engine_for, normalise

STAGING_MARK = ".dmg-staging."


@dataclass
class Verdict:
    files: int = 0
    rows: int = 0
    bytes: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupted: int = 0
    staging_leftovers: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(what)

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicated == self.corrupted == 0


def verify(workload: Workload) -> Verdict:
    verdict = Verdict()
    _verify_files(workload.expected, verdict)
    for key, tables in workload.expected.tables.items():
        _verify_tables(workload.databases[key], tables, verdict)
    verdict.bytes = workload.expected.file_bytes + workload.expected.source_bytes
    verdict.files += workload.expected.source_files
    return verdict


def _verify_files(expected: Expected, verdict: Verdict) -> None:
    for source, sink in expected.file_dirs:
        have = {p.relative_to(sink) for p in sink.rglob("*") if p.is_file()} if sink.is_dir() else set()
        want = {p.relative_to(source) for p in source.rglob("*") if p.is_file()}
        for rel in sorted(want):
            verdict.files += 1
            if rel not in have:
                verdict.lost += 1
                verdict.note(f"lost file {sink / rel}")
            elif not filecmp.cmp(source / rel, sink / rel, shallow=False):
                verdict.corrupted += 1
                verdict.note(f"corrupted file {sink / rel}")
        for rel in sorted(have - want):
            verdict.duplicated += 1
            if STAGING_MARK in rel.name:
                verdict.staging_leftovers += 1
            verdict.note(f"unexpected file {sink / rel}")


def _verify_tables(url: str, tables: dict[str, dict[int, tuple[str, ...]]], verdict: Verdict) -> None:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            for table, rows in sorted(tables.items()):
                verdict.rows += len(rows)
                if table not in present:
                    verdict.lost += len(rows)
                    verdict.note(f"lost table {table} ({len(rows)} rows)")
                    continue
                columns = ", ".join(f'"{c}"' for c in COLUMNS)
                got: dict[int, list[tuple[str, ...]]] = {}
                for record in conn.execute(sa.text(f'SELECT {columns} FROM "{table}"')):
                    values = tuple(normalise(v) for v in record)
                    got.setdefault(_key(values[0]), []).append(values)
                _compare_rows(table, rows, got, verdict)
    finally:
        engine.dispose()


def _key(value: Any) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


def _compare_rows(table: str, rows: dict[int, tuple[str, ...]], got: dict[int, list[tuple[str, ...]]],
                  verdict: Verdict) -> None:
    for key, want in rows.items():
        copies = got.get(key, [])
        if not copies:
            verdict.lost += 1
            verdict.note(f"lost row {table} id={key}")
            continue
        if len(copies) > 1:
            verdict.duplicated += len(copies) - 1
            verdict.note(f"duplicated row {table} id={key} x{len(copies)}")
        if any(c != want for c in copies):
            verdict.corrupted += 1
            verdict.note(f"corrupted row {table} id={key}: {copies[0]} != {want}")
    for key in sorted(set(got) - set(rows)):
        verdict.duplicated += len(got[key])
        verdict.note(f"unexpected row {table} id={key}")
