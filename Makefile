# clusterhub — the two commands: `make lab` and `make test`. Both install what is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY ?= python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# keep pip's downloads between runs (CI and dev machines alike)
export PIP_CACHE_DIR ?= /var/cache/clusterhub-lab/pip-host
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv host base-image browser lab lab-down lint docs unit golden check integration molecule test test-bookworm bench clean

help:
	@echo "make lab       bring up the lab cluster and print how to reach it"
	@echo "make lab-down  remove the lab"
	@echo "make check     lint and unit tests (golden renders, contracts, in-process spawners): the quick loop"
	@echo "make golden    rewrite the golden renders after an intended change of output"
	@echo "make test      lint, unit tests, molecule (multi-host lab scenario), with the time of each phase"
	@echo "make test-bookworm  the Slurm part of the lab on Debian 12"
	@echo "make bench     timings of the lab (bench/)"

$(VENV)/.installed: requirements-dev.txt pyproject.toml roles/jupyterhub/files/requirements-hub.txt
	@$(PY) -m venv --help >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

host:
	bash lab/host-setup.sh

# Debian's Chromium for the browser test (a browser download cannot work on CI machines)
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lab: venv host
	ansible-playbook playbooks/lab/create.yml
	ansible-playbook playbooks/site.yml
	python -m lab.health
	@bash lab/summary.sh

lab-down: venv host
	ansible-playbook playbooks/lab/destroy.yml

lint: venv
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	ruff format --check .

docs: venv
	python tools/role_docs.py

unit: venv
	pytest -q tests/unit

golden: venv
	CLUSTERHUB_UPDATE_GOLDEN=1 pytest -q tests/unit -k golden

check: lint unit

# the lab's base image, built when missing (molecule's create then finds it current)
base-image: venv host
	bash lab/images/build.sh $${CLUSTERHUB_LAB_SUITE:-trixie}

# on the lab's base image
integration: venv host base-image
	pytest -q -rs tests/integration

molecule: venv host browser
	CLUSTERHUB_LAB_PREFIX=chtest molecule test -s lab

# Debian 12 (bookworm): the Slurm part of the lab. Not in `make test`, which stays under 45 minutes
# cold with the full Debian 13 lab; run it when Slurm, munge or users change.
test-bookworm: venv host
	CLUSTERHUB_LAB_PREFIX=chtest molecule test -s bookworm

# The Docker engine and the base image first, once: the checks beside molecule (lint, unit, integration) need none
# of the lab and would otherwise race its create for them on a new machine.
test: venv host base-image
	@bash tools/phases.sh --beside "lint unit integration" molecule

bench: venv host
	python -m bench.lab
	python -m bench.spawn
	python -m bench.load
	python -m bench.overlay
	python -m bench.remote
	python -m bench.start_failure

clean: lab-down
	rm -rf $(VENV) .cache
