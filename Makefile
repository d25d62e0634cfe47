# Torchlight: `make run` serves the dashboard, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test test-sqlite test-postgres venv venv-test chromium lint screenshots bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The stamps re-install only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed
venv-test: $(VENV)/.installed-test

run: venv
	$(BIN)/python manage.py up

chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: venv-test
	$(BIN)/ruff check .
	$(BIN)/python manage.py makemigrations --check --dry-run

# The whole suite on the embedded SQLite, then the tracking, jobs and registry
# tests again on a real PostgreSQL server (.ci/postgres.sh: Debian's packages,
# an unprivileged user, a unix socket in a temp dir).
test: venv-test chromium lint test-sqlite test-postgres

test-sqlite: venv-test chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

PG_TESTS ?= tests/tracker tests/jobs tests/registry tests/security
# Slow tests (real-worker lifecycles, ~5 min more on 2 cores) run on SQLite only by default, to keep CI well
# under 20 minutes; `make test-postgres PG_MARKERS="not browser"` runs them on PostgreSQL too (they pass).
PG_MARKERS ?= not browser and not slow
# Tests whose worker subprocesses are still handed `DATABASE_URL=sqlite:///<NAME>`: on PostgreSQL the
# worker opens an empty SQLite file and the test waits for it until it times out. Once they build the
# URL with config.testing.subprocess_database_url() (or subprocess_env()), drop them from this list.
PG_PENDING ?=
test-postgres: venv-test
	@url=$$(.ci/postgres.sh start) || exit 1; \
	echo "PostgreSQL pass: DATABASE_URL=$$url"; \
	rc=0; \
	DATABASE_URL="$$url" TORCHLIGHT_DATA_DIR="$(CURDIR)/var/test-postgres" \
		$(BIN)/python -m pytest $(PG_TESTS) tests/config -m "$(PG_MARKERS)" $(addprefix --ignore=,$(PG_PENDING)) \
		-p no:cacheprovider $(PYTEST_ARGS) || rc=$$?; \
	.ci/postgres.sh stop; \
	exit $$rc

screenshots: venv-test chromium
	TORCHLIGHT_WRITE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/browser/test_screenshots.py $(PYTEST_ARGS)

clean:
	rm -rf var/test var/test-postgres
	.ci/postgres.sh stop
