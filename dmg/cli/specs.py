"""Checks of store and pipeline files before anything is sent to the cloud.

The cloud checks again; checking here first gives the file's own words in the
error (which activity, which field) and guarantees nothing is half-done.
"""

from __future__ import annotations

from typing import Any

from dmg.connectors import StoreSpec, known_types
from dmg.errors import BadInput


def check_store(body: dict[str, Any], *, source: str) -> dict[str, Any]:
    """The store definition to send, as written (the cloud refuses unknown fields and
    secrets); BadInput names what is missing or wrong."""
    try:
        spec = StoreSpec.from_json(body)
    except BadInput as exc:
        raise BadInput(f"{source}: {exc.message}", hint=exc.hint) from None
    if spec.type not in known_types():
        raise BadInput(f"{source}: store {spec.name!r} has unknown type {spec.type!r}",
                       hint=f"use one of: {', '.join(known_types())}")
    return body


def _text(body: dict[str, Any], key: str, where: str) -> str:
    if key not in body or body[key] is None:
        raise BadInput(f"{where} is missing {key!r}")
    value = body[key]
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{where}: {key!r} must be a non-empty string")
    return value


def _endpoint(activity: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    if key not in activity:
        raise BadInput(f"{where} is missing {key!r}", hint=f'write "{key}": {{"store": NAME, "path": PATH}}')
    end = activity[key]
    if not isinstance(end, dict):
        raise BadInput(f"{where}: {key!r} must be an object", hint='{"store": NAME, "path": PATH}')
    path = end.get("path", "")
    if not isinstance(path, str):
        raise BadInput(f"{where} {key}: 'path' must be a string", hint='"" means the store\'s root')
    return {**end, "store": _text(end, "store", f"{where} {key}"), "path": path}


def check_pipeline(body: dict[str, Any], *, source: str) -> dict[str, Any]:
    """The pipeline to send: ``{name, gateway, activities: [{name, source, sink, options}]}``;
    other fields are sent as written, for the cloud to refuse with a "did you mean"."""
    name = _text(body, "name", f"{source}: the pipeline")
    gateway = _text(body, "gateway", f"{source}: pipeline {name!r}")
    activities = body.get("activities")
    if not isinstance(activities, list) or not activities:
        raise BadInput(f"{source}: pipeline {name!r} needs a non-empty 'activities' list",
                       hint='"activities": [{"name": ..., "source": {...}, "sink": {...}}]')
    checked = []
    seen: set[str] = set()
    for position, activity in enumerate(activities, start=1):
        where = f"{source}: activity #{position}"
        if not isinstance(activity, dict):
            raise BadInput(f"{where} must be an object")
        activity_name = _text(activity, "name", where)
        where = f"{source}: activity {activity_name!r}"
        if activity_name in seen:
            raise BadInput(f"{where} appears twice", hint="give every activity its own name")
        seen.add(activity_name)
        options = activity.get("options") or {}
        if not isinstance(options, dict):
            raise BadInput(f"{where}: 'options' must be an object")
        checked.append({**activity, "name": activity_name, "source": _endpoint(activity, "source", where),
                        "sink": _endpoint(activity, "sink", where), "options": options})
    return {**body, "name": name, "gateway": gateway, "activities": checked}
