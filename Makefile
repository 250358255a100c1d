# One command installs and runs the demo (`make demo`), one installs and runs the tests (`make test`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -r requirements-ci.txt
	$(PY) -m pip install --quiet -e .

test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q tests

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

clean:
	rm -rf $(VENV) demo *.egg-info
