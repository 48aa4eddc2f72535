# Quickstart targets: `make run` (set up + default experiment), `make test` (set up + tests).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
WORKDIR ?= workdirs/maneuvers_memory

.PHONY: run test test-slow lint visualize clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test,video,notebooks,analysis]"
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/python launch.py --config=configs/maneuvers_memory.py --workdir=$(WORKDIR)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

test-slow: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -m slow

visualize: $(VENV)/.installed
	$(VENV)/bin/python scripts/visualize_datasets.py --out workdirs/dataset_grids

clean:
	rm -rf $(VENV) workdirs
