"""Rows as bytes and back: CSV (header first) or JSON Lines.

Reading: dates and times become ISO 8601, binary values base64, decimals their
exact decimal text, NULL an empty CSV field (JSON ``null``).

Writing: each value is converted to its column's Python type; an empty CSV field
is NULL, except in a NOT NULL text column where it is the empty string. JSON
Lines round-trips exactly; CSV cannot tell NULL from an empty string.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from sqlalchemy import Column

from dmg.errors import BadInput

FORMATS = ("csv", "jsonl")


def _plain(value: Any) -> Any:
    """A JSON/CSV-friendly form of a database value."""
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value


def encode_header(columns: Sequence[str], fmt: str) -> bytes:
    if fmt != "csv":
        return b""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(columns)
    return out.getvalue().encode()


def encode_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str) -> bytes:
    """One batch of rows as bytes in ``fmt``."""
    out = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        for row in rows:
            writer.writerow(["" if v is None else _csv_text(_plain(v)) for v in row])
    else:
        for row in rows:
            out.write(json.dumps(dict(zip(columns, (_plain(v) for v in row), strict=True)),
                                 ensure_ascii=False, default=str))
            out.write("\n")
    return out.getvalue().encode()


def _csv_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def decode_records(stream: IO[bytes], fmt: str, *, what: str) -> Iterator[dict[str, Any]]:
    """Records from CSV (first line: column names) or JSON Lines; ``BadInput`` on malformed input."""
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    try:
        if fmt == "csv":
            yield from _csv_records(text, what=what)
        else:
            yield from _jsonl_records(text, what=what)
    except UnicodeDecodeError:
        raise BadInput(f"{what}: the data is not UTF-8 text") from None
    finally:
        text.detach()


def csv_columns(stream: IO[bytes], *, what: str) -> list[str]:
    """The column names on the first CSV line (for creating a table)."""
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    try:
        return next(csv.reader(text), [])
    except UnicodeDecodeError:
        raise BadInput(f"{what}: the data is not UTF-8 text") from None
    finally:
        text.detach()


def _csv_records(text: IO[str], *, what: str) -> Iterator[dict[str, Any]]:
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise BadInput(f"{what}: CSV line {reader.line_num} has {len(row)} fields, "
                           f"the header has {len(header)}")
        yield dict(zip(header, row, strict=True))


def _jsonl_records(text: IO[str], *, what: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(text, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise BadInput(f"{what}: JSON Lines line {number} is not valid JSON") from None
        if not isinstance(record, dict):
            raise BadInput(f"{what}: JSON Lines line {number} is not an object")
        yield record


def _python_type(column: Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(value)


def coerce(value: Any, column: Column[Any], *, from_text: bool) -> Any:
    """``value`` as ``column`` expects it; raises ``ValueError`` when it cannot be."""
    kind = _python_type(column)
    if value is None:
        return None
    if from_text and value == "":
        return "" if (kind is str and not column.nullable) else None
    if kind is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    if kind is str:
        return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
    if kind is bool:
        return _to_bool(value)
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if kind is float:
        return float(value)
    if kind is Decimal:
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ValueError(value) from None
    if kind is dt.datetime:
        return dt.datetime.fromisoformat(str(value))
    if kind is dt.date:
        return dt.date.fromisoformat(str(value))
    if kind is dt.time:
        return dt.time.fromisoformat(str(value))
    if kind is bytes:
        return base64.b64decode(str(value), validate=True)
    if kind in (dict, list) and isinstance(value, str):
        return json.loads(value)
    return value
