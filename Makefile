# Two commands on a fresh machine: `make demo` and `make test`. Both do all set-up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[cpu,export,dev]"
	# The reference detector for the tests; --no-deps keeps opencv-python-headless intact.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "insightface==2.1"
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup lint
	$(PY) -m pytest

demo: setup
	$(VENV)/bin/dfe demo

clean:
	rm -rf demo_out .pytest_cache .ruff_cache
