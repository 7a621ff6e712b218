# clarion: `make run` starts the embedded stack with a demo; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# make bench ARGS='--phases pipeline --profile' runs a subset; see python -m bench.run --help
run: $(STAMP)
	$(BIN)/clarion dev

test: $(STAMP)
	$(BIN)/ruff check clarion tests
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check clarion tests

bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
