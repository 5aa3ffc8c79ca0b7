# Everything runs from the project's own virtual environment, which `make install` creates and fills.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow lint bench bench-quick clean redis-server faketime

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,simulator,redis,tables]'
	touch $(STAMP)

# The demo: jobs/demo.jsonl against the built-in simulator; prints the summary and the first result lines.
run: install
	rm -f jobs/demo.results.jsonl
	$(BIN)/batchchat run jobs/demo.jsonl --simulate --model gpt-4o-mini --max-tokens 60 \
		--system "You are terse." --rpm 3000 --tpm 400000 --concurrency 64; \
	status=$$?; echo; echo "first result lines (jobs/demo.results.jsonl):"; head -n 2 jobs/demo.results.jsonl; exit $$status

lint: install
	$(BIN)/ruff check batchchat tests benchmarks

test: lint redis-server
	$(BIN)/python -m pytest -q

test-slow: install redis-server
	HYPOTHESIS_PROFILE=slow $(BIN)/python -m pytest -q -m 'slow or not slow'

bench: install redis-server faketime
	$(BIN)/python -m pip install --quiet -e '.[dev,simulator,redis,bench,tables]'
	$(BIN)/python -m benchmarks.run_all

bench-quick: install redis-server faketime
	$(BIN)/python -m pip install --quiet -e '.[dev,simulator,redis,bench,tables]'
	$(BIN)/python -m benchmarks.run_all --quick

# The shared-budget tests start their own redis-server on a free loopback port; this only makes sure the binary
# is there (installed with apt-get when missing and we are root; no system service is started or needed).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "redis-server not found: installing the Debian package redis-server (the tests start their own)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
	      || { echo "error: apt-get could not install redis-server; install it by hand and rerun" >&2; exit 1; }; \
	  else \
	    echo "error: redis-server is needed by the tests and is not on PATH." >&2; \
	    echo "  Install it as root (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)," >&2; \
	    echo "  or put a redis-server binary on PATH, then rerun. The tests start their own; no service is needed." >&2; \
	    exit 1; \
	  fi; \
	}
	@command -v redis-server >/dev/null 2>&1 || { echo "error: redis-server still not on PATH" >&2; exit 1; }

# The fleet benchmark offsets one process's clock with libfaketime (Debian package faketime); only the benchmark
# needs it. Installed like redis-server when missing and we are root; without it that one scenario is skipped.
faketime:
	@command -v faketime >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "faketime not found: installing the Debian package faketime (for the fleet benchmark's clock skew)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null \
	      || echo "warning: apt-get could not install faketime; the clock-skew scenario will be skipped" >&2; \
	  else \
	    echo "warning: faketime is not on PATH (sudo apt-get install faketime; macOS: brew install libfaketime);" >&2; \
	    echo "  the fleet benchmark's clock-skew scenario will be skipped" >&2; \
	  fi; \
	}

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache jobs/*.results.jsonl jobs/*.status.json
