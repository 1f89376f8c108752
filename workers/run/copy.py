"""The body of a copy shard: its entries copied by the transfer engine.

:class:`CopyBody` runs inside :func:`workers.run.attempt.run_attempt`. It copies the
shard's entries with :func:`dmg.transfer.copy_entries` under the activity's options
(:class:`dmg.transfer.CopyOptions`), writing under the attempt's staging id; each file
commits only while this attempt is current (a fenced attempt raises StaleAttempt). The
bandwidth limit is the activity run's, shared through Redis and changeable while it
runs (:mod:`dmg.transfer.sitebandwidth`). A cancelled run (looked at every half second
while it copies) stops it between chunks with its staged writes aborted (Cancelled).
Progress is reported at most every ``progress_interval`` s (:mod:`workers.run.progress`),
and the file results leave the node while the shard copies: a report goes as soon as half as
many of them wait as the shard has files still to come (at least :data:`MIN_STREAMED_RESULTS`,
at most :data:`~workers.run.progress.MAX_PENDING_RESULTS`): reports of about a third of what
is left (a 1,250-file shard: 417, 278, 185, 123, 82, 64, 64 and the last 37 in its final
report), so the final report carries only the last few, the results of a shard's last tenth
do not all wait for its end, and the time from the last file copied to the run's end does not
grow with the shard's size, while each report (a Redis push on the node, a batch item at the
cloud) carries many.
The result fails when any file failed, with the first error.
"""

from __future__ import annotations

from dmg.connectors import Connector
from dmg.ids import staging_id
from dmg.shards import ShardSpec
from dmg.transfer import CopyOptions, Throttle, copy_entries
from dmg.transfer.sitebandwidth import SiteBandwidth
from workers.run.attempt import CANCELLED_ERROR, Attempt, Done
from workers.run.progress import MAX_PENDING_RESULTS, Progress

#: The fewest file results a streamed report carries (each report is a Redis push and a
#: batch item at the cloud); fewer wait for the shard's final report.
MIN_STREAMED_RESULTS = 64


class CopyBody:
    """Copies the entries of ``spec`` for the attempt ``run``
    (an :class:`~workers.run.attempt.AttemptBody`)."""

    stages = True

    def __init__(self, spec: ShardSpec, run: Attempt, *, progress_interval: float) -> None:
        self.spec = spec
        self.attempt = run
        self.progress = Progress(run.reporter, run.shard_id, run.base, (spec.files_total, spec.bytes_total),
                                 interval=progress_interval, clock=run.clock,
                                 max_pending=MAX_PENDING_RESULTS, min_pending=MIN_STREAMED_RESULTS)

    def running_totals(self) -> tuple[int, int]:
        return self.spec.files_total, self.spec.bytes_total

    def so_far(self) -> Done:
        progress = self.progress
        return Done(False, progress.files, progress.bytes_done, progress.totals(),
                    file_results=progress.take_pending(), streamed=progress.streamed)

    def run(self) -> Done:
        spec, run, progress = self.spec, self.attempt, self.progress
        state, shard_id, attempt = run.state, run.shard_id, run.attempt
        connectors: list[Connector] = []
        try:
            options = CopyOptions.from_json(spec.options)
            source = run.connector_factory(spec.source_store)
            connectors.append(source)
            sink = run.connector_factory(spec.sink_store)
            connectors.append(sink)
            bandwidth = SiteBandwidth(state, spec.activity_run_id or shard_id, default=options.bandwidth)
            result = copy_entries(
                source, sink, spec.entries,
                source_prefix=spec.source_path, sink_prefix=spec.sink_path,
                staging_id=staging_id(shard_id, attempt),
                may_commit=lambda: state.is_current(shard_id, attempt),
                options=options, throttle=Throttle(bandwidth), sink_hints=spec.sink_hints,
                on_file=progress.file_done, on_bytes=progress.add_bytes, on_tick=progress.tick,
                stop_reason=lambda: CANCELLED_ERROR if state.is_cancelled(spec.activity_run_id) else "",
            )
        finally:
            for connector in connectors:
                connector.close()
        failed = result.failed
        error = ""
        if failed:
            first = failed[0]
            error = f"{len(failed)} of {len(result.files)} files failed; first: {first.path}: {first.error}"
        return Done(not failed, result.copied, result.bytes, progress.totals(), error,
                    file_results=progress.take_pending(), streamed=progress.streamed)
