# kgserver: `make demo` runs the main job on the embedded defaults, `make test` runs the
# checks (ruff, mypy) and the suite.
# Both install into .venv first (once; re-run when the dependency files change).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
# The root project's extras: the test tools for a developer; the Dockerfile passes EXTRAS= (none).
EXTRAS ?= [test]

.PHONY: install demo test proto bench-venv clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml plugins/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -U pip wheel 'setuptools<70'
	$(PIP) -e '.$(EXTRAS)' -e ./plugins
	# grpcio-tools declares setuptools>=77 (unused here) which conflicts with DGL's setuptools<70.
	$(PIP) --no-deps grpcio-tools
	touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

# Lint and types first (seconds), then the suite: one worker process per core (at most four), each
# module's tests on one worker, then the tests that bound a time or CPU cost (marked serial) alone.
test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadscope -m "not serial"
	$(BIN)/python -m pytest -m serial

# PyKEEN lives only in a benchmark venv, for bench/train.py's side-by-side comparison.
bench-venv: bench/.venv-pykeen/.installed

bench/.venv-pykeen/.installed: constraints.txt
	$(PYTHON) -m venv bench/.venv-pykeen
	bench/.venv-pykeen/bin/pip install -c constraints.txt -U pip wheel 'setuptools<70'
	bench/.venv-pykeen/bin/pip install -c constraints.txt torch==2.2.1 pykeen
	touch $@

proto: install
	$(BIN)/python -m kgserver.serving.codegen

clean:
	rm -rf $(VENV) .kgserver
