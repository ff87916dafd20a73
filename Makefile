# Two commands on a fresh machine: `make repro` (the pipeline on the embedded synthetic
# data) and `make test` (the test suite; CI runs exactly this through .ci/run).
# Both create the virtual environment from the pinned files first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup browser repro test test-fast bench device-check app lint review clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==26.3"
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# Debian's Chromium + ChromeDriver, for the review app's browser test.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# Lint first: CI runs this target, so style is enforced where tests are.
test: setup browser lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 --durations=15

test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 -m "not slow and not browser"

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run_all.py

# The prepared GPU check (docs/detection.md): makes its own environment, <= 8 minutes.
device-check:
	benchmarks/device_check.sh

app: setup
	$(BIN)/ichinpaint app

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# Params and headline metrics against a base revision, as Markdown for a pull request:
#   make review BASE=main
BASE ?= main
review: setup
	@echo "### Params (\`dvc params diff $(BASE) --md\`)"; echo
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc params diff $(BASE) --md
	@echo; echo "### Metrics (\`dvc metrics diff $(BASE) --md\`)"; echo
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc metrics diff $(BASE) --md

clean:
	rm -rf $(VENV)
