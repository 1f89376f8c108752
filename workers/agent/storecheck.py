"""Can this node reach every store it may be given? Checked at start and every
``settings.store_check_interval`` s.

The stores are those the pipelines of the node's gateway use, as the cloud lists
them (``GET /api/v1/nodes/stores``, node token); each is opened with the site's
credential (:func:`dmg.credentials.open_store`) and asked
:meth:`~dmg.connectors.Connector.check_reachable`. :meth:`StoreChecker.unreachable`
gives ``{store name: reason}`` for the heartbeat; the dispatcher then places no
work that needs those stores on this node, and the cloud shows the node Limited.

Reasons are one line, without secrets (the credential's values are blanked out
in case a library echoed one). When the cloud cannot be asked, the last list
known is checked again. A check never raises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dmg.cloud.client import CloudClient
from dmg.connectors import Connector, StoreSpec
from dmg.credentials import credential_for, open_store, redact
from dmg.errors import DmgError
from dmg.registration import NodeRegistration
from settings import Settings
from workers.agent.periodic import Periodic

log = logging.getLogger(__name__)

#: Checks run side by side (each bounded by its connector's own timeouts).
PARALLEL_CHECKS = 4
#: A reason is cut to this many characters (heartbeats stay small).
MAX_REASON = 300


class StoreChecker:
    """Checks the stores of the node's gateway; :meth:`start`/:meth:`stop` run it in a thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        fetch_stores: Callable[[], list[dict[str, Any]]],
        open_connector: Callable[[StoreSpec], Connector] | None = None,
        node: str = "",
    ) -> None:
        self.settings = settings
        self.fetch_stores = fetch_stores
        self.open_connector = open_connector or (lambda spec: open_store(spec, settings=settings))
        self.node = node or settings.node_name
        self.known: list[StoreSpec] = []
        self.checked = threading.Event()  # set after the first complete check
        self._unreachable: dict[str, str] = {}
        self._lock = threading.Lock()
        self._loop = Periodic(self.check_once, interval=self.settings.store_check_interval,
                              name=f"dmg-storecheck-{self.node}", what="store check round")
        self.owned: list[Any] = []  # clients built by from_settings, closed by stop()

    @classmethod
    def from_settings(cls, settings: Settings, registration: NodeRegistration) -> StoreChecker:
        """A checker asking the cloud with the node's token (its own HTTP client)."""
        client = CloudClient(registration.cloud_url, token=registration.token, ca=settings.cloud_ca)
        checker = cls(settings, fetch_stores=client.node_stores, node=registration.node)
        checker.owned = [client]
        return checker

    def unreachable(self) -> dict[str, str]:
        """``{store name: reason}`` as of the last check (empty before the first)."""
        with self._lock:
            return dict(self._unreachable)

    # -- one round ---------------------------------------------------------------------
    def check_once(self) -> dict[str, str]:
        """Fetch the store list (else keep the last one), check each store; returns
        and remembers ``{name: reason}`` of those this node cannot reach."""
        try:
            self.known = [StoreSpec.from_json(body) for body in self.fetch_stores()]
        except DmgError as exc:
            log.warning("cannot list the gateway's stores node=%s error=%s; checking the last list",
                        self.node, exc)
        specs = list(self.known)
        with ThreadPoolExecutor(PARALLEL_CHECKS, thread_name_prefix="dmg-storecheck") as pool:
            reasons = list(pool.map(self.check_store, specs))
        found = {spec.name: reason for spec, reason in zip(specs, reasons, strict=True) if reason}
        with self._lock:
            before, self._unreachable = self._unreachable, found
        for name in sorted(found.keys() - before.keys()):
            log.warning("store unreachable from this node node=%s store=%s reason=%s",
                        self.node, name, found[name])
        for name in sorted(before.keys() - found.keys()):
            log.info("store reachable again node=%s store=%s", self.node, name)
        self.checked.set()
        return found

    def check_store(self, spec: StoreSpec) -> str:
        """Why this node cannot use ``spec`` ("" when it can); never raises."""
        connector: Connector | None = None
        try:
            connector = self.open_connector(spec)
            connector.check_reachable()
            return ""
        except DmgError as exc:
            return self._clean(spec, str(exc))
        except Exception as exc:  # a connector bug must not stop the checks
            log.exception("store check crashed node=%s store=%s", self.node, spec.name)
            return f"the check failed: {type(exc).__name__}"
        finally:
            if connector is not None:
                try:
                    connector.close()
                except Exception:
                    log.debug("closing store %s failed", spec.name, exc_info=True)

    def _clean(self, spec: StoreSpec, reason: str) -> str:
        try:
            credential: Mapping[str, str] | None = credential_for(spec, path=self.settings.credentials_path)
        except DmgError:
            credential = None
        text = " ".join(redact(reason, credential or {}).split())
        return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"

    # -- the thread --------------------------------------------------------------------
    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._loop.stop(timeout)
        for resource in self.owned:
            resource.close()
        self.owned = []
