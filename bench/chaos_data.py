"""The chaos run's data: generated sources, the stores and pipelines that copy them, and
what each sink must hold afterwards.

Four kinds of activity, each a few files of its own (so the sinks can be checked
per activity):

- ``file``: a folder of random files (1-32 KiB; the first activities also get one
  large file each) -> a folder of a file store;
- ``csv`` / ``jsonl``: a folder of CSV or JSON Lines files, one per table -> tables of
  a SQL store (created from the data);
- ``sql``: a table of a SQL source store with ``shard_key``/``rows_per_shard``, so it
  is listed as several key ranges -> a table of the same name in a SQL sink store.

Every SQL sink table has no key constraint: a row inserted twice shows as an extra
row. SQL sinks live in SQLite files under the work dir, or in the PostgreSQL
database of ``--pg`` (tables prefixed so that runs do not meet; the stores use
``"credential": "none"``, so the database must trust the nodes, as a local
``trust`` or ``peer`` setup does).
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

KIB = 1024
MIB = 1024 * KIB
COLUMNS = ("id", "name", "qty", "cents")
_WORDS = ("alpha", "beta", "gamma", "delta", "émile", "zoë", "naïve", "crème", "süß", "ĳssel")
#: A pipeline holds at most 256 activities.
PIPELINE_SIZE = 100


@dataclass(frozen=True)
class Plan:
    """How much data, of which kinds, at what rate."""

    activities: int
    files_per_activity: int
    large_files: int
    large_mib: float
    bandwidth: int  # bytes/s of each small-file activity
    large_bandwidth: int  # bytes/s of an activity holding a large file
    sql_bandwidth: int  # bytes/s of each activity with a SQL side
    rows_per_shard: int = 25
    seed: int = 1

    def kinds(self) -> list[str]:
        """The kind of each activity: 60 % file, then csv, jsonl and sql in turn."""
        rng = random.Random(self.seed)
        n_file = max(1, round(self.activities * 0.6))
        others = ["csv", "jsonl", "sql"]
        kinds = ["file"] * n_file + [others[k % 3] for k in range(self.activities - n_file)]
        head, tail = kinds[:1], kinds[1:]
        rng.shuffle(tail)
        return head + tail


@dataclass
class Expected:
    """What the sinks must hold: files by path, rows by table."""

    files: dict[Path, Path] = field(default_factory=dict)  # sink path -> source path
    file_bytes: int = 0
    file_dirs: list[tuple[Path, Path]] = field(default_factory=list)  # (source dir, sink dir)
    tables: dict[str, dict[str, dict[int, tuple[str, ...]]]] = field(default_factory=dict)
    # sink db key -> table -> id -> row (normalised)
    source_files: int = 0  # files read by csv/jsonl activities
    source_bytes: int = 0  # their bytes

    @property
    def rows(self) -> int:
        return sum(len(rows) for tables in self.tables.values() for rows in tables.values())


@dataclass
class Workload:
    """Generated data, the SQL databases, and the pipelines to run."""

    root: Path
    expected: Expected
    databases: dict[str, str]  # sink db key -> SQLAlchemy URL
    pipelines: list[dict[str, Any]]
    stores: list[dict[str, Any]]
    kinds: dict[str, int]
    prefix: str = ""
    source_schema: str | None = None  # with --pg: the source tables' schema


def normalise(value: Any) -> str:
    """One text form for a value read back from any database or format."""
    if isinstance(value, bool):
        value = int(value)
    return "" if value is None else str(value)


def _sa_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    return url


def engine_for(url: str) -> sa.Engine:
    return sa.create_engine(_sa_url(url))


def _random_rows(rng: random.Random, first_id: int, count: int) -> list[tuple[int, str, int, int]]:
    rows = []
    for n in range(count):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
        name = f'{words}, "{n}"' if n % 7 == 0 else words  # commas and quotes test the CSV path
        rows.append((first_id + n, name, rng.randint(0, 10_000), rng.randint(-10**9, 10**9)))
    return rows


def _csv_bytes(rows: list[tuple[int, str, int, int]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return out.getvalue().encode()


def _jsonl_bytes(rows: list[tuple[int, str, int, int]]) -> bytes:
    return "".join(json.dumps(dict(zip(COLUMNS, row, strict=True)), ensure_ascii=False) + "\n"
                   for row in rows).encode()


def _write_random(path: Path, size: int, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 4 * MIB)
            fh.write(rng.randbytes(n))
            left -= n


def build(root: Path, plan: Plan, *, pg_url: str = "", prefix: str = "") -> Workload:
    """Generate every source under ``root`` (and in the source database), and the stores
    and pipelines that copy them; nothing is sent to the cloud yet."""
    rng = random.Random(plan.seed)
    root.mkdir(parents=True, exist_ok=True)
    if pg_url:
        databases = {"src": pg_url, "csv": pg_url, "jsonl": pg_url, "sql": pg_url}
    else:
        databases = {k: f"sqlite:///{root / f'{k}.db'}" for k in ("src", "csv", "jsonl", "sql")}
    expected = Expected(tables={k: {} for k in ("csv", "jsonl", "sql")})
    for top in ("files", "out", "csv", "jsonl"):
        (root / top).mkdir(exist_ok=True)
    kinds = plan.kinds()
    activities: list[dict[str, Any]] = []
    large_left = plan.large_files
    source_tables: list[tuple[str, list[tuple[int, str, int, int]]]] = []
    next_id = 1
    for index, kind in enumerate(kinds):
        name = f"{kind[0]}{index:04d}"
        if kind == "file":
            source, sink = root / "files" / name, root / "out" / name
            for k in range(plan.files_per_activity):
                path = source / (f"d{k % 3}" if k % 2 else "") / f"f{k:03d}.bin"
                _write_random(path, rng.randint(1 * KIB, 32 * KIB), rng)
            bandwidth = plan.bandwidth
            if large_left > 0:
                large_left -= 1
                size = int(plan.large_mib * MIB * rng.uniform(0.5, 1.0))
                _write_random(source / "big" / "large.bin", size, rng)
                bandwidth = plan.large_bandwidth
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                expected.files[sink / path.relative_to(source)] = path
                expected.file_bytes += path.stat().st_size
            expected.file_dirs.append((source, sink))
            activities.append({"name": name, "source": {"store": "chaos-files", "path": name},
                               "sink": {"store": "chaos-out", "path": name},
                               "options": {"bandwidth": bandwidth}})
        elif kind in ("csv", "jsonl"):
            folder = root / kind / name
            folder.mkdir()
            tables = max(1, plan.files_per_activity // 4)
            for k in range(tables):
                table = f"{prefix}{name}_{k}"
                rows = _random_rows(rng, next_id, rng.randint(20, 60))
                next_id += len(rows)
                data = _csv_bytes(rows) if kind == "csv" else _jsonl_bytes(rows)
                (folder / table).write_bytes(data)
                expected.source_files += 1
                expected.source_bytes += len(data)
                expected.tables[kind][table] = {r[0]: tuple(normalise(v) for v in r) for r in rows}
            activities.append({"name": name, "source": {"store": f"chaos-{kind}-files", "path": name},
                               "sink": {"store": f"chaos-{kind}", "path": ""},
                               "options": {"bandwidth": plan.sql_bandwidth, "overwrite": "always"}})
        else:
            table = f"{prefix}{name}"
            rows = _random_rows(rng, next_id, plan.rows_per_shard * rng.randint(3, 6) - rng.randint(0, 9))
            next_id += len(rows)
            source_tables.append((table, rows))
            expected.tables["sql"][table] = {r[0]: tuple(normalise(v) for v in r) for r in rows}
            activities.append({"name": name, "source": {"store": "chaos-src", "path": table},
                               "sink": {"store": "chaos-sql", "path": ""},
                               "options": {"bandwidth": plan.sql_bandwidth, "overwrite": "always"}})
    source_schema = f"{prefix}src" if pg_url else None  # the sink tables have the same names
    _fill_source_db(databases["src"], source_tables, schema=source_schema)
    source_options: dict[str, Any] = {"shard_key": "id", "rows_per_shard": plan.rows_per_shard,
                                      "format": "csv"}
    if source_schema:
        source_options["schema"] = source_schema
    stores: list[dict[str, Any]] = [
        {"name": "chaos-files", "type": "file", "location": str(root / "files")},
        {"name": "chaos-out", "type": "file", "location": str(root / "out")},
        {"name": "chaos-csv-files", "type": "file", "location": str(root / "csv")},
        {"name": "chaos-jsonl-files", "type": "file", "location": str(root / "jsonl")},
        {"name": "chaos-csv", "type": "sql", "location": databases["csv"],
         "options": {"create_table": True, "format": "csv"}},
        {"name": "chaos-jsonl", "type": "sql", "location": databases["jsonl"],
         "options": {"create_table": True, "format": "jsonl"}},
        {"name": "chaos-src", "type": "sql", "location": databases["src"], "options": source_options},
        {"name": "chaos-sql", "type": "sql", "location": databases["sql"],
         "options": {"create_table": True, "format": "csv"}},
    ]
    if pg_url:  # a database that trusts the nodes: no entry in the site's credentials file
        for store in stores:
            if store["type"] == "sql":
                store["options"]["credential"] = "none"
    pipelines = [{"name": f"chaos-{k // PIPELINE_SIZE}", "activities": activities[k:k + PIPELINE_SIZE]}
                 for k in range(0, len(activities), PIPELINE_SIZE)]
    counts = {kind: kinds.count(kind) for kind in ("file", "csv", "jsonl", "sql")}
    return Workload(root, expected, databases, pipelines, stores, counts, prefix, source_schema)


def _fill_source_db(url: str, tables: list[tuple[str, list[tuple[int, str, int, int]]]], *,
                    schema: str | None) -> None:
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            if schema:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            for table, rows in tables:
                name = f'"{schema}"."{table}"' if schema else f'"{table}"'
                conn.execute(sa.text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name TEXT, "
                                     "qty INTEGER, cents BIGINT)"))
                conn.execute(sa.text(f"INSERT INTO {name} (id, name, qty, cents) "
                                     "VALUES (:id, :name, :qty, :cents)"),
                             [dict(zip(COLUMNS, row, strict=True)) for row in rows])
    finally:
        engine.dispose()


def drop_tables(workload: Workload) -> None:
    """Drop every table (and the source schema) this workload made or had made: a ``--pg``
    database is someone else's."""
    tables = sorted(t for kind in ("csv", "jsonl", "sql") for t in workload.expected.tables[kind])
    engine = engine_for(workload.databases["sql"])
    try:
        with engine.begin() as conn:
            for table in tables:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
            if workload.source_schema:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{workload.source_schema}" CASCADE'))
    finally:
        engine.dispose()
