# The README's two commands: `make quickstart` (main job end to end) and `make test`.
# Both create ./.venv and install the project on first use, so they work on a fresh machine.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.install-stamp

.PHONY: install quickstart test
install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/nba quickstart

# pytest exits 5 when it collects no test: treat that as a failure to notice, not a crash of make.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc
