#!/usr/bin/env bash
# `make test`: the whole suite in two phases (README "Development" -> "Test run time").
#
#   1. every test but the fault tests, in TEST_WORKERS pytest-xdist processes
#      (--dist loadfile: a test module runs whole in one process, its module-scoped site
#      starts once; each process has its own servers, free ports and temp dirs);
#   2. the fault tests (SERIAL_TESTS: failover timings, killed processes, restarted
#      servers, whole sites), in one process, so no neighbour's load bends their timings.
#
# Both phases always run; the exit status is the first failing phase's pytest status
# (5, no test collected, counts only when neither phase ran a test). The last line adds
# both phases up: "suite: N passed, N failed, N skipped" (errors count as failed).
#
# Usage: tests/run_suite.sh PYTEST [PYTEST_ARGS...]
#   TEST_WORKERS   xdist processes for phase 1 (0: one process, no xdist)
#   SERIAL_TESTS   paths (whitespace-separated) of phase 2; "" puts every test in phase 1
#                  (the default is the Makefile's SERIAL_TESTS)
set -uo pipefail

pytest_bin="$1"
shift
workers="${TEST_WORKERS:-2}"
serial="${SERIAL_TESTS-tests/ha tests/chaos/test_chaos_short.py tests/e2e/test_failures.py
  tests/e2e/test_cloud_workers.py tests/scale/test_add_node.py tests/scale/test_autoscale.py
  tests/scale/test_distributed_object.py tests/scale/test_sixteen_nodes.py
  tests/containers/test_compose_processes.py tests/cli/test_up_supervisor.py
  tests/workers/test_agent.py tests/workers/test_node_runtime.py tests/cloud/test_fuzz.py}"

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
started=$SECONDS

ignores=()
for path in $serial; do
  ignores+=("--ignore=$path")
done
xdist=()
if [ "$workers" != "0" ]; then
  xdist=(-n "$workers" --dist loadfile)
fi

# A phase's pytest status; its output goes to the terminal and to $logs/<name>.
phase() {
  local name="$1"
  shift
  echo "== make test, $name: pytest $*"
  "$pytest_bin" "$@" 2>&1 | tee "$logs/$name"
  return "${PIPESTATUS[0]}"
}

parallel_status=0
phase "phase 1 of 2 ($workers processes)" -q "${xdist[@]}" "${ignores[@]}" "$@" || parallel_status=$?
serial_status=5
if [ -n "$serial" ]; then
  serial_status=0
  # shellcheck disable=SC2086  # the paths are meant to be split
  phase "phase 2 of 2 (fault tests, one process)" -q $serial "$@" || serial_status=$?
fi

# "N passed, N failed, ..." from each phase's closing line.
count() {
  cat "$logs"/* 2>/dev/null | grep -E '^(=+ )?([0-9]+ [a-z]+(, )?)+ in [0-9.]+s' | grep -oE "[0-9]+ $1" \
    | awk '{s += $1} END {print s + 0}'
}
passed=$(count passed)
failed=$(( $(count failed) + $(count error) ))
skipped=$(count skipped)
echo "== make test: phase 1 exit $parallel_status, phase 2 exit $serial_status, $((SECONDS - started)) s in all"
echo "suite: $passed passed, $failed failed, $skipped skipped"

for status in "$parallel_status" "$serial_status"; do
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    exit "$status"
  fi
done
if [ "$parallel_status" -eq 5 ] && [ "$serial_status" -eq 5 ]; then
  exit 5
fi
exit 0
