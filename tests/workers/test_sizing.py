from __future__ import annotations

import logging
from pathlib import Path

import pytest

from settings import Settings
from workers.agent.sizing import (
    GIB,
    MachineSize,
    default_limit,
    limit_source,
    machine_limit,
    machine_size,
    node_limit,
)


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


# -- the container's limits (cgroup files in a temporary directory) ----------------------

HOST = (8, 32 * GIB)


def v2_root(tmp_path: Path, *, memory: str | None = "max", cpu: str | None = "max 100000") -> Path:
    """A cgroup v2 mount as a container sees it (its own group at the root)."""
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    if memory is not None:
        (tmp_path / "memory.max").write_text(memory + "\n")
    if cpu is not None:
        (tmp_path / "cpu.max").write_text(cpu + "\n")
    return tmp_path


def test_no_limit_sizes_from_the_host(tmp_path: Path) -> None:
    size = machine_size(cgroup_root=v2_root(tmp_path), self_cgroup="0::/\n", host=HOST)
    assert size == MachineSize(cpus=8.0, memory=32 * GIB, source="host")
    assert machine_limit(size) == 16


def test_a_memory_limit_below_the_host_sizes_the_node(tmp_path: Path) -> None:
    size = machine_size(cgroup_root=v2_root(tmp_path, memory=str(3 * GIB)), self_cgroup="0::/\n",
                        host=HOST)
    assert size == MachineSize(cpus=8.0, memory=3 * GIB, source="cgroup")
    assert machine_limit(size) == 4  # (3 - 1) GiB / 512 MiB, not the host's 16


def test_a_memory_limit_above_the_host_is_ignored(tmp_path: Path) -> None:
    size = machine_size(cgroup_root=v2_root(tmp_path, memory=str(64 * GIB)), self_cgroup="0::/\n",
                        host=HOST)
    assert size.source == "host" and size.memory == 32 * GIB


def test_a_cpu_quota_gives_fractional_cpus(tmp_path: Path) -> None:
    size = machine_size(cgroup_root=v2_root(tmp_path, cpu="150000 100000"), self_cgroup="0::/\n",
                        host=HOST)
    assert size == MachineSize(cpus=1.5, memory=32 * GIB, source="cgroup")
    assert machine_limit(size) == 3  # 2 jobs per CPU, rounded down


def test_the_tightest_group_above_the_process_holds(tmp_path: Path) -> None:
    root = v2_root(tmp_path, memory="max", cpu="max 100000")
    own = root / "system.slice" / "dmg.service"
    own.mkdir(parents=True)
    (root / "system.slice" / "memory.max").write_text(str(2 * GIB))
    (own / "memory.max").write_text(str(6 * GIB))
    (own / "cpu.max").write_text("50000 100000")
    size = machine_size(cgroup_root=root, self_cgroup="0::/system.slice/dmg.service\n", host=HOST)
    assert size == MachineSize(cpus=0.5, memory=2 * GIB, source="cgroup")
    assert machine_limit(size) == 1


@pytest.mark.parametrize(("memory", "cpu"), [
    ("lots", "max 100000"),
    ("max", "150000 oops"),
    ("max", "0 100000"),
    ("max", ""),
])
def test_malformed_files_fall_back_to_the_host_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, memory: str, cpu: str) -> None:
    root = v2_root(tmp_path, memory=memory, cpu=cpu)
    with caplog.at_level(logging.WARNING, logger="workers.agent.sizing"):
        size = machine_size(cgroup_root=root, self_cgroup="0::/\n", host=HOST)
    assert size == MachineSize(cpus=8.0, memory=32 * GIB, source="host")
    assert any("sizing from the host" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


def test_cgroup_v1_limits_are_read(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(2 * GIB))
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    size = machine_size(cgroup_root=tmp_path, self_cgroup="4:memory:/docker/abc\n1:cpu:/docker/abc\n",
                        host=HOST)
    assert size == MachineSize(cpus=2.0, memory=2 * GIB, source="cgroup")


def test_cgroup_v1_without_limits_is_the_host(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert machine_size(cgroup_root=tmp_path, self_cgroup="", host=HOST).source == "host"


def test_no_cgroup_mount_is_the_host(tmp_path: Path) -> None:
    assert machine_size(cgroup_root=tmp_path / "absent", self_cgroup="", host=HOST).source == "host"


def test_limit_source_names_the_override() -> None:
    assert limit_source(Settings(node_concurrency=3)) == "setting"
    assert limit_source(Settings(node_concurrency=0)) in ("cgroup", "host")
