# `make demo` and `make test` work on a machine that has only Python 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: setup demo test clean-venv

setup: $(STAMP)

# Re-installs only when the pinned dependencies change, so a ready venv costs seconds.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

demo: setup
	$(PY) -m benchmarks.demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
