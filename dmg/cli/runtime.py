"""``dmg node start`` wiring: the node runtime plus its dispatcher candidate.

This is the one place where ``workers`` and ``dispatcher`` meet (DESIGN.md:
``dmg/cli/`` is the composition root); both are imported only when a node starts.
"""

from __future__ import annotations

import logging
from typing import Any

from dmg.registration import NodeRegistration
from settings import Settings

log = logging.getLogger(__name__)


def build_node(settings: Settings, registration: NodeRegistration) -> Any:
    """A ``workers.agent.node.NodeRuntime`` running a ``dispatcher.loop.DispatcherService`` and a
    ``workers.agent.storecheck.StoreChecker`` (whose findings go into the heartbeats). The
    dispatcher opens stores with the site's credentials (:func:`dmg.credentials.open_store`)."""
    from functools import partial

    from dispatcher.loop import DispatcherService
    from dmg.credentials import open_store
    from workers.agent.node import NodeRuntime
    from workers.agent.storecheck import StoreChecker

    dispatcher = DispatcherService.from_settings(settings, registration,
                                                 connector_factory=partial(open_store, settings=settings))
    checker = StoreChecker.from_settings(settings, registration)
    runtime = NodeRuntime(settings, registration, services=[checker, dispatcher],
                          role=dispatcher.role, epoch=dispatcher.lease_epoch)
    runtime.agent.store_health = checker.unreachable
    return runtime


def run_node(settings: Settings, registration: NodeRegistration) -> None:
    """Run the node until SIGTERM/SIGINT; exits non-zero when its worker died."""
    import click

    runtime = build_node(settings, registration)
    log.info("starting node %s of gateway %s", registration.node, registration.gateway)
    code = runtime.run_forever()
    if code:
        raise click.exceptions.Exit(code)
