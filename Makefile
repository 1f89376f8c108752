# dmg: the two commands of the README, and lint.
#
#   make demo   a 2-node gateway on this machine copies a generated folder, verified byte for byte
#   make test   the test suite (real Redis, cloud, nodes; PostgreSQL, Azurite, moto when present)
#   make lint   ruff + mypy (--strict on dmg/site, dmg/shards, workers/run)
#
# Both create .venv (python3 -m venv) when it is missing and install dmg into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# `make test` runs the suite in two phases (tests/run_suite.sh; README "Test run time"):
# every test but the fault tests in TEST_WORKERS pytest-xdist processes (each test module
# whole in one of them: its module-scoped site starts once), then the fault tests
# (SERIAL_TESTS) in one process. TEST_WORKERS=0 runs phase 1 in one process too;
# SERIAL_TESTS= (empty) puts every test in phase 1. Phase 2 names files, not folders, where a
# folder also holds tests that fault nothing (tests/scale's placement rules, the chaos checker,
# the compose file, the store pairs): those run in phase 1. tests/run_suite.sh has the same list.
TEST_WORKERS ?= 2
SERIAL_TESTS ?= tests/ha tests/chaos/test_chaos_short.py tests/e2e/test_failures.py \
  tests/e2e/test_cloud_workers.py tests/scale/test_add_node.py tests/scale/test_autoscale.py \
  tests/scale/test_distributed_object.py tests/scale/test_sixteen_nodes.py \
  tests/containers/test_compose_processes.py tests/cli/test_up_supervisor.py \
  tests/workers/test_agent.py tests/workers/test_node_runtime.py tests/cloud/test_fuzz.py
# .ci/run sets this to learn pytest's own exit status (make itself always exits 2 on failure).
PYTEST_STATUS_FILE ?=

.PHONY: demo test lint install up clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: dmg needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || \
	  { rm -rf $(VENV); echo "error: cannot create $(VENV) (on Debian: apt-get install python3-venv)"; exit 1; }

# Reinstall only when the dependencies may have changed.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/dmg demo

up: install
	$(BIN)/dmg up

test: install
	@status=0; TEST_WORKERS="$(TEST_WORKERS)" SERIAL_TESTS="$(SERIAL_TESTS)" \
	  bash tests/run_suite.sh $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	  if [ -n "$(PYTEST_STATUS_FILE)" ]; then echo $$status > "$(PYTEST_STATUS_FILE)"; fi; \
	  exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy dmg workers dispatcher settings
	$(BIN)/mypy --strict dmg/shards
	$(BIN)/mypy --strict dmg/site dmg/ids.py
	$(BIN)/mypy --strict workers/run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
