from __future__ import annotations

import pytest

from settings import Settings
from workers.agent.sizing import GIB, default_limit, machine_limit, node_limit


@pytest.mark.parametrize(("cores", "memory", "expected"), [
    (1, 1 * GIB, 1),      # memory leaves no room for a job: still 1
    (2, 4 * GIB, 4),      # CPU-bound: 2 per core
    (8, 32 * GIB, 16),    # CPU-bound
    (16, 4 * GIB, 6),     # memory-bound: (4 - 1) GiB / 512 MiB
    (64, 1024 * GIB, 64),  # capped
    (0, 0, 1),            # nonsense input still gives a usable limit
])
def test_default_limit_follows_the_formula(cores: int, memory: int, expected: int) -> None:
    assert default_limit(cores, memory) == expected


def test_node_concurrency_overrides_the_machine_size() -> None:
    assert node_limit(Settings(node_concurrency=3)) == 3


def test_without_override_the_machine_decides() -> None:
    limit = node_limit(Settings(node_concurrency=0))
    assert limit == machine_limit()
    assert 1 <= limit <= 64
