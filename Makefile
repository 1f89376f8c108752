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
# `make test` runs the suite in three phases (tests/run_suite.sh; README "Test run time"):
# every test but the fault tests in TEST_WORKERS pytest-xdist processes (each test module
# whole in one of them: its module-scoped site starts once), then the fault tests that wait
# rather than time (FAULT_TESTS) in FAULT_WORKERS processes, longest file first, then the
# timed fault tests (SERIAL_TESTS: failover bounds, deadlines that failed under a loaded
# neighbour) in one process. The two lists live in tests/run_suite.sh only (one copy):
# `make test FAULT_TESTS=... SERIAL_TESTS=...` overrides them (a variable given on make's
# command line reaches the script); TEST_WORKERS=0 / FAULT_WORKERS=0 run that phase in one
# process; FAULT_TESTS= SERIAL_TESTS= puts every test in phase 1.
TEST_WORKERS ?= 2
FAULT_WORKERS ?= 2
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
	@status=0; TEST_WORKERS="$(TEST_WORKERS)" FAULT_WORKERS="$(FAULT_WORKERS)" \
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
