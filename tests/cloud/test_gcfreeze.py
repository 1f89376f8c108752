"""A long-running process keeps its start-up objects out of the collector (:mod:`dmg.gcfreeze`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import httpx

from tests.cloud.conftest import Cloud


def test_keep_startup_objects_freezes_what_the_process_holds() -> None:
    """Given a fresh interpreter (freezing the test run's own objects would keep its garbage),
    when it keeps its start-up objects, then they are frozen and a full collection after
    walks none of them."""
    script = ("import gc; from dmg.gcfreeze import keep_startup_objects; "
              "before = gc.get_freeze_count(); kept = keep_startup_objects(); "
              "print(before, kept, gc.get_freeze_count(), len(gc.get_objects()))")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    before, kept, frozen, tracked = (int(v) for v in out.split())
    assert before == 0
    assert kept == frozen > 1_000
    assert tracked < kept / 10  # what a later collection walks: only what came after


def test_the_cloud_serves_with_its_start_up_objects_frozen(start_cloud: Callable[..., Cloud]) -> None:
    """Given a cloud with its debug counters, its process froze the app it built before it
    served: ``gc_frozen`` counts them (the cloud's own modules and app: tens of thousands)."""
    cloud = start_cloud(cloud_metrics=True)
    token = cloud.process.api_token
    with httpx.Client(base_url=cloud.url + "/api/v1", headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as client:
        snapshot = client.get("/debug/metrics").json()
    assert snapshot["gc_frozen"] > 10_000
    assert snapshot["gc_full_collections"] >= 0
