# The README's two commands: `make quickstart` (main job end to end) and `make test`.
# Both create ./.venv and install the project on first use, so they work on a fresh machine.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.install-stamp
PYTEST := $(VENV)/bin/python -m pytest -q
# Step labels go to stderr so a redirected stdout stays clean; pip runs quietly, so without them a
# 2-3 minute install shows nothing.
say = @echo "== $(1)" >&2

.PHONY: install quickstart test test-fast test-slow lint
install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH" >&2; exit 1; }
	$(call say,install 1/3: virtual environment $(VENV))
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(call say,install 2/3: upgrade pip)
	@$(VENV)/bin/pip install -q --upgrade pip
	$(call say,install 3/3: the pinned stack and nba - torch feast mlflow bentoml ... - 2 to 3 minutes with no output while pip works)
	@$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $(STAMP)
	$(call say,install done)

quickstart: $(STAMP)
	$(VENV)/bin/nba quickstart

# Two lanes, each test run once: the fast lane fails within minutes, and only when it passes does
# the slow lane (real servers, tiny end-to-end runs) start. pytest exits 5 when a lane collects no
# test: reported, so a lane emptied by a marker typo is noticed.
test: $(STAMP)
	$(call say,test lane 1/2: fast (not slow and not e2e))
	@$(PYTEST) -m "not slow and not e2e"; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no fast tests" >&2; fi; exit $$rc
	$(call say,test lane 2/2: slow and end to end (slow or e2e))
	@$(PYTEST) -m "slow or e2e"; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no slow tests" >&2; fi; exit $$rc

test-fast: $(STAMP)
	$(PYTEST) -m "not slow and not e2e"

test-slow: $(STAMP)
	$(PYTEST) -m "slow or e2e"

# Lint and format check without changing files (`ruff format .` / `ruff check --fix .` to apply).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
