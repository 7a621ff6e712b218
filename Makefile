# clarion: `make run` starts the embedded stack with a demo; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench install browser clean

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

# Three processes, a module's tests in one of them (--dist loadfile: a module-scoped stack starts once), each with
# its own broker and Redis: the broker tests mostly wait (group joins, retry delays, providers).
test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check clarion tests
	$(BIN)/pytest -q -n 3 --dist loadfile

# Everything that needs no broker or Redis, with a quarter of the property tests' examples (tests/budget.py)
test-fast: $(STAMP)
	$(BIN)/ruff check clarion tests
	CLARION_TEST_EXAMPLES=0.25 $(BIN)/pytest -q -m "not infra" -n 2 --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check clarion tests

bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
