# Torchlight: `make run` serves the dashboard, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test venv venv-test chromium lint screenshots bench clean

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

test: venv-test chromium lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

screenshots: venv-test chromium
	$(BIN)/python -m pytest tests/browser/test_screenshots.py -p no:randomly $(PYTEST_ARGS)

clean:
	rm -rf var/test
