"""When the embedded site counts a node as up: Online, or Limited only by stores."""

from __future__ import annotations

from typing import Any

import pytest

from dmg.embedded.readiness import node_ready

LIMITED_BY_STORE = {"status": "Limited", "limit": 2, "stores_unreachable": ["lake"],
                    "reasons": ["store 'lake': bucket 'b' does not exist", "cannot reach store(s) lake"]}


@pytest.mark.parametrize("row,ready", [
    ({"status": "Online", "limit": 2}, True),
    ({"status": "Online", "limit": 0}, False),  # its worker is not up yet
    (LIMITED_BY_STORE, True),
    ({**LIMITED_BY_STORE, "reasons": [*LIMITED_BY_STORE["reasons"], "broker unreachable"]}, False),
    ({**LIMITED_BY_STORE, "stores_unreachable": []}, False),
    ({"status": "Limited", "limit": 2, "stores_unreachable": [], "reasons": ["cloud unreachable"]}, False),
    ({"status": "Offline", "limit": 2}, False),
    ({}, False),
])
def test_a_node_is_ready_when_only_stores_limit_it(row: dict[str, Any], ready: bool) -> None:
    assert node_ready(row) is ready
