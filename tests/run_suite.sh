#!/usr/bin/env bash
# `make test`: the whole suite in three phases (README "Development" -> "Test run time").
#
#   1. every test but the fault tests, in TEST_WORKERS pytest-xdist processes
#      (--dist loadfile: a test module runs whole in one process, its module-scoped site
#      starts once; each process has its own servers, free ports and temp dirs);
#   2. the fault tests that wait rather than time (FAULT_TESTS: killed processes, restarted
#      servers, whole sites, the minute-long watches), in FAULT_WORKERS xdist processes,
#      --dist loadfile, the files in the order given (longest first: a process that is
#      free takes the next file, so the long ones do not end up last and alone);
#   3. the fault tests whose assertions are timings or that failed under a loaded
#      neighbour (SERIAL_TESTS: failover bounds, backlogs with a deadline), in one
#      process, so no neighbour's load bends their timings.
#
# A folder in FAULT_TESTS or SERIAL_TESTS stands for its test_*.py files not named
# elsewhere in either list (so a new file there is a fault test too, run last).
#
# Every phase always runs; the exit status is the first failing phase's pytest status
# (5, no test collected, counts only when no phase ran a test). The last line adds the
# phases up: "suite: N passed, N failed, N skipped" (errors count as failed).
#
# Usage: tests/run_suite.sh PYTEST [PYTEST_ARGS...]
#   TEST_WORKERS   xdist processes for phase 1 (0: one process, no xdist)
#   FAULT_WORKERS  xdist processes for phase 2 (0: one process, no xdist; default 2)
#   FAULT_TESTS    paths (whitespace-separated) of phase 2 (default: the list below)
#   SERIAL_TESTS   paths of phase 3 (default: the list below);
#                  FAULT_TESTS= SERIAL_TESTS= puts every test in phase 1
set -uo pipefail

pytest_bin="$1"
shift
workers="${TEST_WORKERS:-2}"
fault_workers="${FAULT_WORKERS:-2}"
# Longest first (summed setup+call+teardown of one run, README "Test run time").
fault="${FAULT_TESTS-tests/cli/test_up_supervisor.py tests/ha/test_broker.py
  tests/ha/test_upgrade.py tests/ha/test_shared_redis.py
  tests/ha/test_node_failures.py tests/scale/test_sixteen_nodes.py tests/ha/test_leftovers.py
  tests/chaos/test_chaos_short.py tests/e2e/test_cloud_workers.py
  tests/containers/test_compose_processes.py tests/ha/test_statuses.py
  tests/ha/test_cloud_outage.py tests/scale/test_distributed_object.py tests/ha/test_attempts.py
  tests/ha/test_worker_death.py tests/scale/test_add_node.py tests/ha/test_long_copy.py
  tests/ha/test_metrics_site.py tests/ha/test_own_figures.py tests/ha/test_request_count.py
  tests/ha/test_fencing.py tests/scale/test_autoscale.py tests/ha}"
# The fuzz computes (schemathesis, Hypothesis' deadlines), test_replay's paused attempt must
# catch a throttled copy half done, test_drain's forced remove must find node3's shards still
# running or done: each failed beside a neighbour on a loaded machine. test_idle_latency
# times submit -> start; tests/cloud/test_workers.py times wake-ups across two cloud
# workers (a run wait answered within 100 ms of the run's end on the other worker).
serial="${SERIAL_TESTS-tests/ha/test_drain.py tests/cloud/test_fuzz.py tests/ha/test_fast_detection.py
  tests/ha/test_sentinel.py tests/ha/test_cancel_and_poison.py tests/e2e/test_failures.py
  tests/workers/test_agent.py tests/workers/test_node_runtime.py tests/ha/test_replay.py
  tests/ha/test_idle_latency.py tests/cloud/test_workers.py}"

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
started=$SECONDS

# The files a list names, in its order: a folder gives its test_*.py files that neither
# list names (sorted).
# shellcheck disable=SC2086  # the paths are meant to be split
named=" $(echo $fault $serial) "
files_of() {
  local path file
  for path in $1; do
    if [ -d "$path" ]; then
      for file in "$path"/test_*.py; do
        case "$named" in *" $file "*) ;; *) echo "$file" ;; esac
      done
    else
      echo "$path"
    fi
  done
}
mapfile -t fault_files < <(files_of "$fault")
mapfile -t serial_files < <(files_of "$serial")

ignores=()
for path in $fault $serial; do
  ignores+=("--ignore=$path")
done
xdist() {  # xdist's arguments for $1 processes; $2: keep the files in the order given
  if [ "$1" != "0" ]; then
    echo "-n $1 --dist loadfile ${2:-}"
  fi
}

# A phase's pytest status; its output goes to the terminal and to $logs/<name>.
phase() {
  local name="$1"
  shift
  echo "== make test, $name: pytest $*"
  "$pytest_bin" "$@" 2>&1 | tee "$logs/$name"
  return "${PIPESTATUS[0]}"
}

statuses=()
status=0
# shellcheck disable=SC2046  # xdist's arguments are meant to be split
phase "phase 1 of 3 ($workers processes)" -q $(xdist "$workers") "${ignores[@]}" "$@" || status=$?
statuses+=("$status")
status=5
if [ "${#fault_files[@]}" -gt 0 ]; then
  status=0
  # shellcheck disable=SC2046
  phase "phase 2 of 3 (fault tests, $fault_workers processes)" -q $(xdist "$fault_workers" --no-loadscope-reorder) \
    "${fault_files[@]}" "$@" || status=$?
fi
statuses+=("$status")
status=5
if [ "${#serial_files[@]}" -gt 0 ]; then
  status=0
  phase "phase 3 of 3 (timed fault tests, one process)" -q "${serial_files[@]}" "$@" || status=$?
fi
statuses+=("$status")

# "N passed, N failed, ..." from each phase's closing line.
count() {
  cat "$logs"/* 2>/dev/null | grep -E '^(=+ )?([0-9]+ [a-z]+(, )?)+ in [0-9.]+s' | grep -oE "[0-9]+ $1" \
    | awk '{s += $1} END {print s + 0}'
}
passed=$(count passed)
failed=$(( $(count failed) + $(count error) ))
skipped=$(count skipped)
echo "== make test: phase 1 exit ${statuses[0]}, phase 2 exit ${statuses[1]}," \
  "phase 3 exit ${statuses[2]}, $((SECONDS - started)) s in all"
echo "suite: $passed passed, $failed failed, $skipped skipped"

for status in "${statuses[@]}"; do
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    exit "$status"
  fi
done
for status in "${statuses[@]}"; do
  if [ "$status" -ne 5 ]; then
    exit 0
  fi
done
exit 5
