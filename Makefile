# fiji-consensus: `make demo` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
EXTRAS ?= test,train,zoo,keras
STAMP  := $(VENV)/.installed-$(EXTRAS)

.PHONY: setup system-deps demo test test-all bench screenshot clean

# Python environment: a venv with the package (editable) and the pinned extras.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

setup: $(STAMP)

# Java + ImageJ 1 (Debian libij-java) + Xvfb, installed from Debian when missing and we are root.
system-deps:
	@bash scripts/install-system-deps.sh

demo: $(STAMP)
	$(BIN)/fiji-consensus demo --out demo-output --overwrite

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -m "not slow"

test-all: $(STAMP) system-deps
	$(BIN)/python -m pytest

bench: $(STAMP) system-deps
	$(BIN)/python tests/benchmarks/bench_staple.py
	$(BIN)/python tests/benchmarks/bench_objects.py
	$(BIN)/python tests/benchmarks/bench_fiji.py

# README picture: experts, consensus and the zoo model's objects on a lab it never saw, in real ImageJ under
# Xvfb (about a minute for the package's prediction; needs xdotool and imagemagick from Debian).
screenshot: $(STAMP) system-deps
	@command -v xdotool >/dev/null && command -v import >/dev/null || \
	  (test "$$(id -u)" = 0 && apt-get install -y -qq --no-install-recommends xdotool imagemagick >/dev/null)
	$(BIN)/python scripts/readme_screenshot.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache build *.egg-info
