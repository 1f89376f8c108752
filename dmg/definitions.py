"""The rules a store or pipeline definition follows, checked where it is submitted.

The cloud's API is the boundary: a definition that breaks a rule is refused with
one :class:`~dmg.errors.BadInput` line naming what is wrong (and, for a misspelt
name, the name meant) and nothing is saved. The CLI checks the same rules first to
name the file it read. The rules:

- **shape**: a JSON value nests at most :data:`MAX_DEPTH` levels, holds at most
  :data:`MAX_ITEMS` values, no NUL character, no NaN/Infinity (:func:`check_shape`,
  iterative: a hostile 100,000-level value cannot exhaust the stack);
- **store options**: the names and values of :mod:`dmg.connectors.options` for the
  store's type;
- **activity options**: the names of :class:`dmg.transfer.CopyOptions` and
  :data:`dmg.transfer.split.OPTION_NAMES`, the values they accept;
- **paths**: a source or sink path has no ``..`` segment;
- **size**: at most :data:`MAX_DEFINITION_BYTES` of JSON (the API refuses a larger
  request body before reading it, 413).

:func:`stored_definition_problem` says why a definition saved before these rules
is unusable, for the list endpoints and the claim to show instead of failing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from dmg.connectors.options import STORE_OPTIONS, option_names
from dmg.errors import BadInput, TooLarge
from dmg.transfer.options import CopyOptions
from dmg.transfer.split import OPTION_NAMES as SPLIT_OPTION_NAMES
from dmg.transfer.split import SplitOptions

#: How deep a definition (or any request body) may nest: {"activities": [{"options": {...}}]}.
MAX_DEPTH = 12
#: How many values (keys, items, leaves) one JSON value may hold.
MAX_ITEMS = 20_000  # dmg.cloud.limits.MAX_BODY_VALUES is the same (a test keeps them equal)
#: The largest store or pipeline definition, as JSON.
MAX_DEFINITION_BYTES = 1024 * 1024

ACTIVITY_OPTION_NAMES: tuple[str, ...] = tuple(
    sorted([f.name for f in dataclasses.fields(CopyOptions)] + list(SPLIT_OPTION_NAMES)))


def check_shape(value: Any, *, where: str = "", max_depth: int = MAX_DEPTH) -> None:
    """Raise ValueError for a value nested deeper than ``max_depth``, larger than
    :data:`MAX_ITEMS`, or holding what no database column takes (NUL, NaN, Infinity)."""
    if _plainly_fine(value, max_depth):
        return
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    seen = 0
    while stack:
        item, path, depth = stack.pop()
        seen += 1
        if seen > MAX_ITEMS:
            raise ValueError(f"{where or 'the value'} holds more than {MAX_ITEMS} values")
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError(f"{path or 'a value'} contains a NUL character")
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise ValueError(f"{path or 'a value'} is not a finite number")
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise ValueError(f"{path or 'the value'} nests deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, inner in item.items():
                    stack.append((key, path, depth + 1))
                    stack.append((inner, f"{path}.{key}" if path else str(key), depth + 1))
            else:
                stack.extend((inner, f"{path}[{index}]", depth + 1) for index, inner in enumerate(item))


def _plainly_fine(value: Any, max_depth: int) -> bool:
    """True when ``value`` passes :func:`check_shape` for certain: a walk level by level
    that builds no path (a path per value was ~70 % of checking a batch of file results);
    False when unsure, and :func:`check_shape` walks again to name the first fault."""
    level: list[Any] = [value]
    seen = 0
    depth = 0
    while level:
        deeper: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is str:
                if "\x00" in item:
                    return False
            elif kind is float:
                if item != item or item in (_INF, -_INF):
                    return False
            elif kind is dict:
                if depth >= max_depth:
                    return False
                for key in item:
                    if type(key) is not str or "\x00" in key:
                        return False
                seen += len(item)
                deeper.extend(item.values())
            elif kind is list:
                if depth >= max_depth:
                    return False
                deeper.extend(item)
            elif kind not in (int, bool) and item is not None:
                return False  # another type (a subclass...): the full walk judges it
        seen += len(level)
        if seen > MAX_ITEMS:
            return False
        level = deeper
        depth += 1
    return True


_INF = float("inf")


def unknown_name(name: str, known: Iterable[str], *, what: str, where: str = "") -> BadInput:
    """``BadInput("<where>: unknown <what> 'bandwith'", hint="did you mean 'bandwidth'? ...")``."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    prefix = f"{where}: " if where else ""
    return BadInput(f"{prefix}unknown {what} {name!r}", hint=f"{hint}known: {', '.join(names)}")


def check_store_options(store_type: str, options: Mapping[str, Any], *, store: str) -> None:
    """BadInput naming the first unknown or bad option of a ``store_type`` store."""
    if store_type not in STORE_OPTIONS:
        raise BadInput(f"store {store!r} has unknown type {store_type!r}",
                       hint=f"use one of: {', '.join(sorted(STORE_OPTIONS))}")
    known = option_names(store_type)
    for name in options:
        if name not in known:
            raise unknown_name(str(name), known, what=f"{store_type} store option", where=f"store {store!r}")
    try:
        STORE_OPTIONS[store_type].model_validate(dict(options))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        raise BadInput(f"store {store!r}: option {field!r}: {first.get('msg', 'is not valid')}",
                       hint=f"see the {store_type} store's options in the README") from None


def check_activity_options(options: Mapping[str, Any], *, activity: str) -> None:
    """BadInput naming the first unknown or bad option of an activity."""
    for name in options:
        if name not in ACTIVITY_OPTION_NAMES:
            raise unknown_name(str(name), ACTIVITY_OPTION_NAMES, what="option",
                               where=f"activity {activity!r}")
    try:
        CopyOptions.from_json(options)
        SplitOptions.from_json(options)
    except BadInput as exc:
        raise BadInput(f"activity {activity!r}: {exc.message}", hint=exc.hint) from None


def check_size(definition: Any, *, what: str, limit: int = MAX_DEFINITION_BYTES) -> None:
    """TooLarge for a definition larger than ``limit`` bytes as JSON."""
    size = len(json.dumps(definition, separators=(",", ":")))
    if size > limit:
        raise TooLarge(f"{what} is {size} bytes of JSON, more than {limit}",
                       hint="split it, or keep long SQL and lists out of the options")


def check_path(path: str, *, where: str) -> None:
    """BadInput for a path with a ``..`` segment (it would leave the store's root)."""
    if ".." in path.replace("\\", "/").split("/"):
        raise BadInput(f"{where} path {path!r} has a '..' segment",
                       hint="write the path from the store's root, without '..'")


def stored_definition_problem(value: Any) -> str:
    """Why a definition read from the database cannot be used ("" when it can)."""
    try:
        check_shape(value)
    except ValueError as exc:
        return f"the stored definition is invalid: {exc}"
    return ""
