"""The supervisor's policy, over an in-memory site: who is reported, when a dead process
starts again, and how the delay grows and resets. (Real processes: tests/cli/test_up_supervisor.py.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dmg.embedded.supervisor import Backoff, Supervisor


@dataclass
class MemorySite:
    """A site whose processes die and start when the test says so."""

    log_dir: Path
    dead: dict[str, int] = field(default_factory=dict)  # name -> exit code
    restarts: list[str] = field(default_factory=list)
    fail_restarts: int = 0

    def dead_children(self) -> list[str]:
        return sorted(self.dead)

    def exit_code(self, name: str) -> int | None:
        return self.dead.get(name)

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def restart_child(self, name: str) -> int:
        if self.fail_restarts:
            self.fail_restarts -= 1
            raise RuntimeError("port 6479 is taken")
        del self.dead[name]
        self.restarts.append(name)
        return 1000 + len(self.restarts)


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, *, restart: bool = True) -> tuple[MemorySite, Clock, list[str], Supervisor]:
    site, clock, said = MemorySite(tmp_path), Clock(), []
    (tmp_path / "node2.log").write_text("starting\nTraceback ...\nMemoryError\n")
    return site, clock, said, Supervisor(site, say=said.append, restart=restart, clock=clock)


def test_a_process_that_keeps_dying_is_reported_each_time_with_a_growing_delay(tmp_path: Path) -> None:
    site, clock, said, supervisor = make(tmp_path)
    delays = []
    for _ in range(7):
        site.dead["node2"] = 1
        supervisor.tick()
        delays.append(float(said[-2].rsplit(" in ", 1)[1].rstrip(" s")))
        assert said[-2].startswith("error: node2 stopped unexpectedly (exit code 1); restarting it in ")
        assert said[-1] == f"  log {tmp_path / 'node2.log'}: starting | Traceback ... | MemoryError"
        clock.now += delays[-1] - 0.1
        supervisor.tick()
        assert site.dead  # not before its delay
        clock.now += 0.1
        supervisor.tick()
        assert not site.dead and said[-1] == f"restarted node2 (pid {1000 + len(site.restarts)})"
        clock.now += 2  # dies again soon
    assert delays == [1, 2, 4, 8, 16, 30, 30]


def test_the_delay_resets_once_the_process_stayed_up(tmp_path: Path) -> None:
    site, clock, said, supervisor = make(tmp_path)
    for _ in range(3):
        site.dead["node2"] = -9
        supervisor.tick()
        clock.now += 10
        supervisor.tick()
    assert "restarting it in 4 s" in said[-3]
    clock.now += Backoff().stable_after
    site.dead["node2"] = -9
    supervisor.tick()
    assert said[-2] == "error: node2 stopped unexpectedly (killed by SIGKILL); restarting it in 1 s"


def test_no_restart_reports_once_and_leaves_it_down(tmp_path: Path) -> None:
    site, clock, said, supervisor = make(tmp_path, restart=False)
    site.dead["node2"] = -9
    for _ in range(5):
        supervisor.tick()
        clock.now += 60
    assert site.restarts == [] and len(said) == 2
    assert said[0].startswith("error: node2 stopped unexpectedly (killed by SIGKILL); left down")


def test_a_failed_restart_is_reported_and_tried_again_later(tmp_path: Path) -> None:
    site, clock, said, supervisor = make(tmp_path)
    site.fail_restarts = 1
    site.dead["redis"] = 0
    supervisor.tick()
    clock.now += 1
    supervisor.tick()
    assert said[-1] == "error: redis did not restart: port 6479 is taken; trying again in 2 s"
    clock.now += 2
    supervisor.tick()
    assert site.restarts == ["redis"] and said[-1] == "restarted redis (pid 1001)"
