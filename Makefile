# probekit: two commands for a fresh machine (see README.md).
#   make demo   create .venv, install, provision offline assets, run the suite, write reports/index.html
#   make test   create .venv if needed, provision assets, check format and lint, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.probekit-installed

.PHONY: demo test lint venv assets system-deps jupyter-settings check-reports clean-features clean-reports

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	@echo "byte-compiling the venv on every core (pip compiles on one: 72 s of its 147 s on 2 cores)"
	$(PY) -m compileall -qq -j 0 $(VENV)/lib || echo "some files did not byte-compile; pip skips them too (torch ships Python 3.12-only test files)"
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the checks and optional datasets use (Chromium for report checks,
# Fashion-MNIST); skipped with a message where apt-get is not available or we are not root.
system-deps:
	@bash scripts/system_deps.sh

# JupyterLab opens the project's jupytext .py notebooks as notebooks on double-click: the
# jupytext default-viewer setting shipped in jupyter/labconfig, installed into the venv.
jupyter-settings: venv
	install -D -m 644 jupyter/labconfig/default_setting_overrides.json \
		$(VENV)/etc/jupyter/labconfig/default_setting_overrides.json

assets: venv
	$(VENV)/bin/probekit assets

# Format and lint: the formatter must have nothing to change, the linter nothing to report (rules
# in pyproject.toml). `ruff format . && ruff check --fix .` repairs most of it.
lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

test: venv system-deps jupyter-settings assets lint
	$(PY) -m pytest

demo: venv system-deps jupyter-settings assets
	$(VENV)/bin/probekit suite configs/demo.yaml --out reports
	@echo 'reports written: open reports/index.html'

check-reports: venv
	$(PY) scripts/check_reports.py reports

clean-features:
	rm -rf data/features

clean-reports:
	find reports -mindepth 1 ! -name .gitkeep ! -name README.md -delete
