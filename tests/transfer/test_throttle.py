"""The bandwidth limit: pacing, a limit changed while a copy runs, one schedule per
activity run shared through the site's Redis."""

from __future__ import annotations

import threading
from pathlib import Path

import redis as redis_lib

from dmg.connectors.base import StoreSpec
from dmg.connectors.file import FileConnector
from dmg.site.state import SiteState
from dmg.transfer import CopyOptions, LocalBandwidth, Throttle, copy_entries
from dmg.transfer.sitebandwidth import SiteBandwidth
from tests.workers.support import dead_redis, tree, wait_for, write_files

KiB = 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_reservations_keep_to_the_limit() -> None:
    clock = FakeClock()
    throttle = Throttle(LocalBandwidth(1000, clock=clock), clock=clock, sleep=clock.sleep)

    for _ in range(5):
        throttle.take(500)

    assert clock.slept == [0.5, 0.5, 0.5, 0.5]  # 2500 bytes at 1000 B/s: 2 s after the first chunk
    assert throttle.applied == {1000.0: 2500} and throttle.waited == 2.0


def test_no_limit_never_waits_and_chunks_shrink_under_a_low_limit() -> None:
    clock = FakeClock()
    control = LocalBandwidth(0, clock=clock)
    throttle = Throttle(control, clock=clock, sleep=clock.sleep, refresh=0)
    throttle.take(10 * KiB * KiB)
    assert clock.slept == [] and throttle.chunk_size(KiB * KiB) == KiB * KiB
    control.set_limit(64 * KiB)
    assert throttle.chunk_size(KiB * KiB) == 16 * KiB  # a quarter second of traffic


def test_a_new_limit_is_picked_up_after_the_refresh_interval() -> None:
    clock = FakeClock()
    control = LocalBandwidth(1000, clock=clock)
    throttle = Throttle(control, clock=clock, sleep=clock.sleep, refresh=1.0)
    throttle.take(100)
    control.set_limit(5000)
    throttle.take(100)  # within the refresh interval: still the old limit
    clock.now += 1.0
    throttle.take(100)
    assert throttle.applied == {1000.0: 200, 5000.0: 100}


def test_the_site_limit_defaults_to_the_option_until_set(redis_client: redis_lib.Redis) -> None:
    state = SiteState(redis_client, "gw")
    control = SiteBandwidth(state, "ar1", default=2048)
    assert control.current_limit() == 2048
    state.set_bandwidth("ar1", 0)
    assert control.current_limit() == 0 and state.bandwidth("ar1") == 0
    state.set_bandwidth("ar1", 10 * KiB)
    assert control.current_limit() == 10 * KiB and state.bandwidth("ar2") is None


def test_shards_of_one_activity_run_share_one_schedule(redis_client: redis_lib.Redis) -> None:
    state = SiteState(redis_client, "gw")
    one, two = SiteBandwidth(state, "ar1"), SiteBandwidth(state, "ar1")
    other = SiteBandwidth(state, "ar2")

    first = one.reserve(1000, 1000)
    second = two.reserve(1000, 1000)  # booked after the first: about a second later

    assert first <= 0.001 and second > 0.5
    assert other.reserve(1000, 1000) <= 0.001  # another activity run has its own


def test_a_broker_outage_keeps_the_last_limit_and_paces_locally(redis_client: redis_lib.Redis) -> None:
    state = SiteState(redis_client, "gw")
    state.set_bandwidth("ar1", 4096)
    control = SiteBandwidth(state, "ar1")
    assert control.current_limit() == 4096
    control.state = SiteState(dead_redis(), "gw")

    assert control.current_limit() == 4096
    assert control.reserve(4096, 4096) == 0  # the local schedule starts now
    assert control.reserve(4096, 4096) > 0.5


def test_the_limit_changes_while_a_copy_runs(tmp_path: Path, redis_client: redis_lib.Redis) -> None:
    write_files(tmp_path / "src" / "in", {"big.bin": 3 * 1024 * KiB})
    (tmp_path / "dst").mkdir()
    source = FileConnector(StoreSpec("src", "file", str(tmp_path / "src")))
    sink = FileConnector(StoreSpec("dst", "file", str(tmp_path / "dst")))
    state = SiteState(redis_client, "gw")
    slow, fast = 256 * KiB, 1024 * 1024 * KiB
    throttle = Throttle(SiteBandwidth(state, "ar1", default=slow), refresh=0.05)
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            copy_entries(source, sink, list(source.list("in")), source_prefix="in", sink_prefix="out",
                         staging_id="s.1", options=CopyOptions(bandwidth=slow), throttle=throttle)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: throttle.applied.get(slow, 0) >= 64 * KiB, what="bytes sent under the first limit")
        state.set_bandwidth("ar1", fast)  # what `dmg runs bandwidth` does
        wait_for(done.is_set, what="the copy to finish")
    finally:
        state.set_bandwidth("ar1", 0)
        thread.join(30)

    assert errors == []
    assert set(throttle.applied) == {slow, fast}
    assert throttle.applied[slow] + throttle.applied[fast] == 3 * 1024 * KiB
    assert throttle.applied[fast] > throttle.applied[slow]  # most of it moved after the change
    assert tree(tmp_path / "dst" / "out") == tree(tmp_path / "src" / "in")
