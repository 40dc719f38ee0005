# The two promises of the README: `make demo` and `make test`, each doing its own set-up.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: demo test test-slow test-all setup setup-dev bench clean postgres browser

demo: $(VENV)/.installed
	$(VENV)/bin/cnnkit train configs/lenet5_mnist5k.yaml

# `make test` leaves out the tests marked slow (statistical, many-epoch, multi-process);
# `make test-slow` runs only those, `make test-all` everything.
# The tune scale-out test starts a real PostgreSQL: .ci/ensure-postgres installs Debian's package
# when it is missing (as root); without it that test fails and says how to install it.
test: $(VENV)/.installed-dev postgres browser
	$(PY) -m pytest -q -n 2 -m "not slow"

test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -q -n 2 -m slow

test-all: $(VENV)/.installed-dev postgres browser
	$(PY) -m pytest -q -n 2

postgres:
	@bash .ci/ensure-postgres || true

# The web app's browser tests drive Debian's chromium: .ci/ensure-chromium installs chromium and
# chromium-driver when they are missing (as root); without them those tests fail and say how to install.
browser:
	@bash .ci/ensure-chromium || true

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/trainer_overhead.py
	$(PY) benchmarks/reference_vs_torch.py

clean:
	rm -rf runs .pytest_cache .hypothesis
