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
    add_credential_sync(runtime, settings, registration, is_dispatcher=dispatcher.is_dispatcher)
    return runtime


def add_credential_sync(runtime: Any, settings: Settings, registration: NodeRegistration, *,
                        is_dispatcher: Any) -> None:
    """Credential sync on this node (:mod:`dmg.credentials.nodesync`) and, while it holds
    the lease, for the whole gateway (:mod:`dispatcher.credsync`); their findings ride on
    the heartbeat (versions held, public key, stores placement must skip here)."""
    from dispatcher.credsync import CredentialSync
    from dmg.credentials.nodesync import NodeCredentials
    from dmg.credentials.vault import NodeVault
    from dmg.registration import node_dir
    from workers.agent.periodic import Periodic

    vault = NodeVault(node_dir(settings.data_dir, registration.node))
    copies = runtime.state.credentials
    mine = NodeCredentials(node=registration.node, vault=vault, copies=copies, cloud=runtime.cloud)
    gateway = CredentialSync(node=registration.node, vault=vault, copies=copies, cloud=runtime.cloud,
                             is_dispatcher=is_dispatcher)
    interval = max(settings.heartbeat_interval, 0.5)

    def both() -> None:
        gateway.sync_once()
        mine.sync_once()

    mine.sync_once()  # the first heartbeat already says what this node holds
    runtime.services.insert(0, Periodic(both, interval=interval, name=f"dmg-credentials-{registration.node}",
                                        what="credential sync"))
    drain = runtime.agent.extras
    runtime.agent.extras = lambda: {**(drain() if drain is not None else {}), **mine.heartbeat_fields()}


def run_node(settings: Settings, registration: NodeRegistration) -> None:
    """Run the node until SIGTERM/SIGINT; exits non-zero when its worker died. Drained for an
    upgrade, it restarts itself on the installed version (:mod:`workers.agent.upgrade`)."""
    import click

    from dmg.gcfreeze import keep_startup_objects

    runtime = build_node(settings, registration)
    log.info("starting node %s of gateway %s", registration.node, registration.gateway)
    runtime.start()
    # The agent's and the dispatcher's imports and state live as long as the process.
    keep_startup_objects()
    code = runtime.run_forever()
    if runtime.upgrade.ready.is_set():
        from workers.agent.upgrade import restart_on_new_version

        restart_on_new_version(settings.upgrade_command)  # returns only for "exit"
        return
    if code:
        raise click.exceptions.Exit(code)
