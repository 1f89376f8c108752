"""Portal sessions: a browser signed in with the API token holds a random session id.

The cookie carries the id; the database keeps only its sha256, with an expiry
(:data:`SESSION_TTL`). ``/logout`` deletes the row, so the cookie stops working at
once, on every cloud process sharing the database.
"""

from __future__ import annotations

import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dmg.cloud.keys import sha256
from dmg.cloud.models import PortalSession

#: How long a portal session lasts without signing in again (seconds).
SESSION_TTL = 12 * 3600.0


def open_session(session: Session, *, now: float) -> str:
    """A new session id (to set as the cookie); expired sessions are purged."""
    session.execute(delete(PortalSession).where(PortalSession.expires_at <= now))
    session_id = secrets.token_urlsafe(32)
    session.add(PortalSession(id_hash=sha256(session_id), created_at=now, expires_at=now + SESSION_TTL))
    session.flush()
    return session_id


def is_open(session: Session, session_id: str, *, now: float) -> bool:
    if not session_id:
        return False
    expires = session.scalar(select(PortalSession.expires_at)
                             .where(PortalSession.id_hash == sha256(session_id)))
    return expires is not None and expires > now


def close_session(session: Session, session_id: str) -> None:
    """End a session (idempotent)."""
    if session_id:
        session.execute(delete(PortalSession).where(PortalSession.id_hash == sha256(session_id)))
