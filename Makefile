# Everything runs from the project's own virtual environment, which `make install` creates and fills.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow lint bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,simulator]'
	touch $(STAMP)

# The demo: jobs/demo.jsonl against the built-in simulator; prints the summary and the first result lines.
run: install
	rm -f jobs/demo.results.jsonl
	$(BIN)/batchchat run jobs/demo.jsonl --simulate --model gpt-4o-mini --max-tokens 60 \
		--system "You are terse." --rpm 3000 --tpm 400000 --concurrency 64; \
	status=$$?; echo; echo "first result lines (jobs/demo.results.jsonl):"; head -n 2 jobs/demo.results.jsonl; exit $$status

lint: install
	$(BIN)/ruff check batchchat tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,simulator,bench]'
	$(BIN)/python -m benchmarks.run_all

bench-quick: install
	$(BIN)/python -m pip install --quiet -e '.[dev,simulator,bench]'
	$(BIN)/python -m benchmarks.run_all --quick

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache jobs/*.results.jsonl
