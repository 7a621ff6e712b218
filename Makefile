# clarion: `make run` starts the embedded stack with a demo; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,test]'  # dev: the embedded broker and Redis
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium, headless, for the dashboard's browser test (tests/test_dashboard.py drives it over CDP)
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

browser: $(CHROMIUM)

# make bench ARGS='--phases pipeline --profile' runs a subset; see python -m bench.run --help
run: $(STAMP)
	$(BIN)/clarion dev

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check clarion tests
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check clarion tests

bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
