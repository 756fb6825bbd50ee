# Targets for a fresh Debian machine with Python 3.11:
#   make run    create .venv, install the router, run it on the example config
#   make test   install SIPp, espeak-ng, promtool and the test extras, run every test
#   make demo   place one real call per route of the example config
#   make bench  install SIPp and Kamailio, run the benchmark (about 15 min)
#   make soak   run the router for 10 min under mixed routes, check it

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/router.example.yaml
# apt-get needs root; run it through sudo for other users.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test demo bench soak tools kamailio clean

run: $(VENV)/.installed-run
	$(BIN)/cozmox-router run -c $(CONFIG)

test: tools $(VENV)/.installed-test $(BIN)/promtool
	$(BIN)/python -m pytest

demo: tools $(VENV)/.installed-run
	$(BIN)/python scripts/demo.py

# Writes bench/results/<date>.md; bench/README.md describes the method.
bench: tools kamailio $(VENV)/.installed-run
	$(BIN)/python -m bench

# Reads the newest bench/results/<date>.json, writes bench/results/soak-<date>.md
# and fails when a check fails; bench/README.md describes the checks.
soak: tools $(VENV)/.installed-run
	$(BIN)/python -m bench.soak

# SIPp 3.6.1 is Debian's sip-tester package; espeak-ng speaks the prompts
# of `say` actions, error replies and transfer messages. Only the missing
# ones are installed.
tools:
	@missing=""; \
	command -v sipp >/dev/null || missing="$$missing sip-tester"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi

# promtool checks the alert rules and dashboard queries in deploy/. Only the
# binary is taken from Debian's prometheus package, so no Prometheus server
# is installed or started.
$(BIN)/promtool: | $(BIN)/python
	@if command -v promtool >/dev/null; then \
		ln -sf "$$(command -v promtool)" $@; \
	else \
		tmp=$$(mktemp -d) && cd $$tmp && \
		{ apt-get download prometheus 2>/dev/null || \
		  { $(SUDO) apt-get update && apt-get download prometheus; }; } && \
		dpkg-deb -x prometheus_*.deb root && \
		cp root/usr/bin/promtool $(abspath $@) && \
		cd $(CURDIR) && rm -rf $$tmp; \
	fi

# Kamailio 5.6 is Debian's kamailio package. The benchmark starts its own
# Kamailio on 127.0.0.1, so the unit is masked first: the package would
# otherwise start a system-wide Kamailio on every interface at install.
kamailio:
	@command -v kamailio >/dev/null || { \
		$(SUDO) systemctl mask kamailio.service 2>/dev/null; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y kamailio; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV)
