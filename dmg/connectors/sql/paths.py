"""What a path means in the ``sql`` store.

- ``orders`` or ``sales.orders``: a whole table (optionally schema-qualified);
- ``query:<name>``: a read-only query from the store's ``options.queries``;
- ``orders?id>=100&id<200``: a key range of a table (a shard). Either bound may
  be absent; the range without a lower bound also holds rows whose key is NULL.
  Bound values are URL-quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from dmg.errors import BadInput

QUERY_PREFIX = "query:"
_BOUND = re.compile(r"^(?P<key>[^<>=&]+)(?P<op>>=|<)(?P<value>.*)$")
_NAME = re.compile(r"^[^\s?&<>=/\\\"';]+$")


@dataclass(frozen=True)
class SqlPath:
    """A parsed path: exactly one of ``table`` and ``query`` is set."""

    raw: str
    table: str | None = None
    schema: str | None = None
    query: str | None = None
    key: str | None = None
    lower: str | None = None
    upper: str | None = None

    @property
    def is_range(self) -> bool:
        return self.key is not None

    @property
    def table_path(self) -> str:
        """The path of the whole table this path belongs to."""
        return f"{self.schema}.{self.table}" if self.schema else str(self.table)


def parse_path(path: str, *, store: str) -> SqlPath:
    """Parse ``path``; raises ``BadInput`` when it is none of the three forms."""
    text = path.strip().strip("/")
    if text.startswith(QUERY_PREFIX):
        name = text[len(QUERY_PREFIX):]
        if not name:
            raise BadInput(f"store {store!r}: path {path!r} names no query", hint="write query:<name>")
        return SqlPath(path, query=name)
    name, _, condition = text.partition("?")
    if not name or not _NAME.match(name):
        raise BadInput(f"store {store!r}: {path!r} is not a table name",
                       hint="use a table name, schema.table, query:<name> or table?key>=a&key<b")
    schema, _, table = name.rpartition(".")
    parsed = SqlPath(path, table=table, schema=schema or None)
    if not condition:
        return parsed
    key: str | None = None
    bounds: dict[str, str] = {}
    for part in condition.split("&"):
        match = _BOUND.match(part)
        if match is None or (key is not None and match["key"] != key) or match["op"] in bounds:
            raise BadInput(f"store {store!r}: {path!r} is not a key range",
                           hint="write table?key>=low&key<high (either bound may be left out)")
        key = match["key"]
        bounds[match["op"]] = unquote(match["value"])
    return SqlPath(path, table=table, schema=schema or None, key=key,
                   lower=bounds.get(">="), upper=bounds.get("<"))


def range_path(table_path: str, key: str, lower: str | None, upper: str | None) -> str:
    """The path of the rows of ``table_path`` with ``lower <= key < upper``."""
    parts = []
    if lower is not None:
        parts.append(f"{key}>={quote(lower, safe='')}")
    if upper is not None:
        parts.append(f"{key}<{quote(upper, safe='')}")
    return f"{table_path}?{'&'.join(parts)}" if parts else table_path
