"""Store definitions: a name, a type, a location and options, never a secret."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dmg.cloud.models import Gateway, Pipeline, Store
from dmg.cloud.schemas import StoreCreate
from dmg.cloud.service import localpaths
from dmg.cloud.service.secretscan import refuse_secrets
from dmg.cloud.service.views import store_json
from dmg.definitions import check_size, check_store_options, unknown_name
from dmg.errors import BadInput, Conflict, NotFound

#: The largest store definition, as JSON (the API refuses a larger body unread).
STORE_MAX_BYTES = 64 * 1024
SECRETS_HINT = "a secret never goes in a store definition: `dmg credentials set {}` sets it from the site"


def add_store(session: Session, store: StoreCreate, *, now: float) -> dict[str, Any]:
    """Record a store. BadInput if it carries a secret, an unknown field or an option
    :mod:`dmg.definitions` refuses; Conflict if the name is taken. The answer's
    ``warnings`` name a ``file`` location that some node of a multi-node gateway may not
    see (:mod:`.localpaths`)."""
    refuse_secrets(store.model_dump())
    try:
        if store.model_extra:
            field = sorted(store.model_extra)[0]
            raise unknown_name(field, ("name", "type", "location", "options"), what="store field")
        check_store_options(store.type, store.options, store=store.name)
    except BadInput as exc:  # an unknown field may be a secret put in the wrong place
        raise BadInput(exc.message, hint="; ".join(filter(None, (exc.hint, SECRETS_HINT.format(store.name))))
                       ) from None
    check_size(store.model_dump(), what=f"store {store.name!r}", limit=STORE_MAX_BYTES)
    if session.scalar(select(Store.id).where(Store.name == store.name)) is not None:
        raise Conflict(f"store {store.name!r} already exists", hint="pick another name")
    row = Store(name=store.name, type=store.type, location=store.location, options=dict(store.options),
                created_at=now)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"store {store.name!r} already exists", hint="pick another name") from None
    body = store_json(row)
    multi = localpaths.gateway_sizes(session.scalars(select(Gateway)))
    body["warnings"] = (localpaths.warnings_for([row], gateway=multi[0][0], nodes=multi[0][1])
                        if multi else [])
    return body


def list_stores(session: Session) -> list[dict[str, Any]]:
    return [store_json(s) for s in session.scalars(select(Store).order_by(Store.name))]


#: Built once: every claim and every new run reads it.
_STORES_BY_NAME = select(Store).where(Store.name.in_(bindparam("names", expanding=True)))


def stores_by_name(session: Session, names: set[str]) -> dict[str, Store]:
    if not names:
        return {}
    return {s.name: s for s in session.scalars(_STORES_BY_NAME, {"names": sorted(names)})}


#: A store's columns as a plain row (what :func:`.views.store_json` and :mod:`.localpaths`
#: read), not a Store object: the claim and a run's creation read them on the submit -> start path.
_STORE_ROWS = (select(Store.name, Store.type, Store.location, Store.options, Store.created_at)
               .where(Store.name.in_(bindparam("names", expanding=True))))


def store_rows(session: Session, names: set[str]) -> dict[str, Any]:
    """The stores named ``names`` that exist, as plain rows by name (one statement)."""
    if not names:
        return {}
    return {row.name: row for row in session.connection().execute(_STORE_ROWS, {"names": sorted(names)})}


def get_store(session: Session, name: str) -> Store:
    store = session.scalar(select(Store).where(Store.name == name))
    if store is None:
        raise NotFound(f"store {name!r} does not exist", hint="add it with `dmg store add`")
    return store


def stores_of_gateway(session: Session, gateway_id: int) -> list[dict[str, Any]]:
    """The stores the pipelines of a gateway use (what its nodes may be given), by name."""
    names: set[str] = set()
    for activities in session.scalars(select(Pipeline.activities).where(Pipeline.gateway_id == gateway_id)):
        for activity in activities or []:
            names.update(str(activity[side]["store"]) for side in ("source", "sink"))
    found = stores_by_name(session, names)
    return [store_json(found[name]) for name in sorted(found)]
