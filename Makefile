# The book's commands. The README's two are `make book` and `make test`; both set up .venv first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every chapter runs with book/ as working directory and in the environment that tools/execenv.py
# defines (the one place: numeric pins, no progress bars, static figures), both when its outputs
# are stored (refresh, through tools.notebooks) and when they are compared (nbval, through
# conftest.py). `make lab` keeps the numeric pins and drops the rest: a reader gets live controls.
# pip on this project's machines prints a warning per package for a missing local index: hide it.
# (grep exits 1 when it filtered everything: that is fine; pip's own failure still fails the pipe.)
PIPQUIET := { grep -v "is ignored: it is neither a file nor a directory" || [ $$? -eq 1 ]; }
BOOKBUILD := $(BIN)/jupyter-book build . --warningiserror --keep-going --quiet

.PHONY: help setup chromium book test check lint workflows unit slow nbval nbval-ci gate build browser \
        refresh lab bench sweeps portability gpu-check gpu-wheels clean

help:
	@echo "make book     build the static book into _build/html (re-executes stale chapters)"
	@echo "make test     everything CI runs: lint, hamlib tests, sync gate, nbval (natively and under one"
	@echo "              setting that emulates another processor), strict book build, browser tests"
	@echo "make portability  nbval natively and under 3 settings that emulate other processors"
	@echo "              (14 min on 2 cores)"
	@echo "make gpu-check   on a CUDA GPU: kernel tests, nbval of Chapter 6, the kernel benchmark table"
	@echo "make check    the fast gate (< 2 min): lint, sync gate, hamlib unit tests"
	@echo "make browser  Chromium over the built book and a live JupyterLab (after make build)"
	@echo "make refresh  re-execute chapters and store their outputs [CHAPTER=01_high_dimensional_geometry]"
	@echo "make lab      JupyterLab on 127.0.0.1 (token auth), opened on book/"
	@echo "make bench    time every chapter (2 threads, fresh kernel) into book/data/bench.json;"
	@echo "              kernel table on a CUDA GPU [CHAPTER=...: re-time those chapters only]"
	@echo "make sweeps   experiments too slow for a chapter; writes book/data/*.json (minutes)"

setup: $(STAMP)

# The browser tests drive Debian's chromium, never a browser that Playwright downloads. Installed
# here when missing and we are root; otherwise tests/test_browser.py skips and says why.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests (apt-get)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "WARNING: apt-get could not install chromium: the browser tests will be skipped"; \
	  else \
	    echo "no $(CHROMIUM) and not root: the browser tests will be skipped"; \
	  fi; \
	fi

# torch first and alone, so that pip takes the pinned CPU build rather than resolving a CUDA one.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch 2>&1 | $(PIPQUIET)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[book,test]' 2>&1 | $(PIPQUIET)
	$(BIN)/python -c "import hamlib, torch, jupytext, nbval, jupyter_book"
	touch $(STAMP)

lint: setup workflows
	$(BIN)/ruff check hamlib tests tools chapters conftest.py
	$(BIN)/ruff format --check hamlib tests tools chapters conftest.py
	$(BIN)/mypy

# GitHub Actions workflows against the schema vendored in check-jsonschema (offline), plus the
# project's own rules for them (tests/test_workflows.py runs with the unit tests).
workflows: $(STAMP)
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

# The repository's own sync gate and claims page (tests/ checks the gate's logic on scratch copies).
gate: setup
	$(BIN)/python -m tools.notebooks gate
	$(BIN)/python -m tools.claims --check

unit: setup
	$(BIN)/pytest -q -m "not slow and not browser" --durations=10 tests

slow: setup
	$(BIN)/pytest -q -m slow tests

check: lint gate unit

# nbval's command line and the settings that emulate other processors live in tools/portability.py.
nbval: setup
	$(BIN)/python -m tools.portability native

nbval-ci: setup
	$(BIN)/python -m tools.portability --ci

portability: setup
	$(BIN)/python -m tools.portability

build: setup
	rm -rf _build/html _build/.doctrees
	$(BOOKBUILD)
	$(BIN)/python tools/offline.py _build/html

# Chromium over the built book and a live JupyterLab; screenshots land in _build/screenshots/.
# The only target that needs chromium, and it needs the built book (so `make -j test` is safe).
browser: build chromium
	$(BIN)/pytest -q -rs -m browser tests

test: check slow nbval-ci build browser
	@echo "make test: all gates passed"

book: setup
	$(BIN)/python -m tools.notebooks refresh --stale
	$(BIN)/python -m tools.claims
	$(MAKE) --no-print-directory build
	@echo "open _build/html/index.html"

refresh: setup
	$(BIN)/python -m tools.notebooks refresh $(CHAPTER)
	$(BIN)/python -m tools.claims

lab: setup
	$(BIN)/python -m tools.execenv --lab $(BIN)/jupyter lab --ip=127.0.0.1 --no-browser --ServerApp.root_dir="$(CURDIR)" \
	  --LabApp.default_url=/lab/tree/book $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

# The chapter times land in book/data/bench.json, committed: each chapter page shows its own.
BENCH_JSON ?= book/data/bench.json
bench: setup
	$(BIN)/python -m tools.notebooks bench $(CHAPTER) --json $(BENCH_JSON)

sweeps: setup
	$(BIN)/python -m tools.sweeps
	$(BIN)/python -m tools.sweep_minima
	$(BIN)/python -m tools.sweep_gpt
	$(BIN)/python -m tools.sweep_diffusion
	$(BIN)/python -m tools.sweep_compress

# On a CUDA machine, with the Python that holds its CUDA torch and triton (e.g. PY=python3):
# kernel tests on the GPU, nbval of Chapter 6, and the benchmark table in book/data/gpu_bench.json.
PY ?= $(BIN)/python
gpu-check:
	$(PY) tools/gpu_check.py

# Wheels for a GPU machine without network (Python 3.12, x86-64) that has torch, triton, pytest,
# hypothesis and matplotlib but not the notebook tools: into .whl/ (git-ignored), to carry there.
gpu-wheels: setup
	$(BIN)/python -m tools.gpu_wheels .whl

clean:
	rm -rf _build .pytest_cache .mypy_cache .ruff_cache
