"""CSRF tokens of the portal's forms: one per signed-in session, checked on every POST.

The token is an HMAC of the session id under a key only the cloud holds (the API
token), so it needs no storage, dies with the session, and another site, which can
neither read the session cookie nor the page, cannot make one. Every form carries it
in a hidden field ``csrf``; the cookie is also ``SameSite=Strict``.
"""

from __future__ import annotations

import hashlib
import hmac

FIELD = "csrf"


def csrf_token(secret: str, session_id: str) -> str:
    return hmac.new(secret.encode(), b"dmg-portal-csrf:" + session_id.encode(), hashlib.sha256).hexdigest()


def csrf_matches(secret: str, session_id: str, given: str) -> bool:
    """Constant-time check of a form's token against the session's."""
    return bool(session_id) and hmac.compare_digest(csrf_token(secret, session_id), given or "")
