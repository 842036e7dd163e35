# One dev loop, the same locally and in CI. Every target creates .venv first if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## serve a ready workspace with synthetic traffic on ./momently.db
	$(BIN)/momently demo

serve: $(STAMP)
	$(BIN)/momently serve

lint: $(STAMP)
	$(BIN)/ruff check momently tests bench
	$(BIN)/ruff format --check momently tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format momently tests bench
	$(BIN)/ruff check --fix momently tests bench

test: lint  ## lint, type-check, then every test (PostgreSQL tests skip when it is unreachable, fail on CI)
	$(BIN)/pytest

bench: $(STAMP)  ## ingest benchmark on SQLite and PostgreSQL; see docs/benchmarks.md
	$(BIN)/python bench/ingest.py --database sqlite
	$(BIN)/python bench/ingest.py --database postgresql

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache momently.egg-info
