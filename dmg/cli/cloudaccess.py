"""The user's way to the cloud: the API token and a client authenticated with it.

No click here: the ``pipeline run --wait`` fast path (:mod:`dmg.cli.fastpath`) uses it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import settings as settings_mod
from dmg.errors import Unauthorized

if TYPE_CHECKING:
    from dmg.cloud.client import CloudClient


def api_token(settings: settings_mod.Settings) -> str:
    """The user API token: ``DMG_API_TOKEN``, else the token file of a cloud on this machine.

    Raises Unauthorized when neither exists (the CLI never invents a token).
    """
    if settings.api_token:
        return settings.api_token
    from dmg.cloud import keys

    if not (keys.cloud_dir(settings) / "api-token").is_file():
        raise Unauthorized(
            f"no API token: DMG_API_TOKEN is not set and {settings.data_dir} has no cloud",
            hint="set DMG_API_TOKEN to the cloud's token, or DMG_DATA_DIR to the cloud's data dir")
    return keys.api_token(settings)


def user_client(settings: settings_mod.Settings) -> CloudClient:
    """A cloud client authenticated as a user (the API token). The CLI process never
    applies a gateway's proxy (that is a node's); an http:// cloud is reached over a plain
    connection unless the environment names a proxy (:mod:`dmg.cloud.plainhttp`)."""
    from dmg.cloud.client import CloudClient

    return CloudClient(settings.cloud_url, token=api_token(settings), ca=settings.cloud_ca,
                       proxy=_no_proxy, plain_http=not settings_mod.proxy_in_environment())


def _no_proxy() -> str:
    return ""
