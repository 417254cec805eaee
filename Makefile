# Two entry points for a fresh machine: `make demo` and `make test`.
# Everything they need (Debian packages, Go-built cluster binaries, the Python venv)
# is installed by the targets below, idempotently, and cached outside the repo.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ETCD_REGISTRAR_CACHE ?= $(HOME)/.cache/etcd-registrar
ACTIONLINT = $(ETCD_REGISTRAR_CACHE)/actionlint-$(shell sed -n 's/^ACTIONLINT_VERSION=//p' hack/versions.env)/actionlint

.PHONY: help deps tools venv lint typecheck unit integration e2e realnode test faults demo cluster-up cluster-down realnode-up crds bench bench-quick bench-scale kind-e2e clean

help:
	@echo "make demo   - local cluster + operator + demo workload, registry shown live"
	@echo "make test   - lint, types, unit, integration and e2e tests (installs what it needs)"
	@echo "make faults - the fault matrix (docs/reliability.md): every fault under churn, judged"
	@echo "make kind-e2e - the e2e suite against a kind cluster (needs Docker, kind, helm, kubectl)"

deps:
	@hack/install-deps.sh

tools: deps
	@hack/build-tools.sh
	@hack/build-consumers.sh

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

# actionlint (built once from its Go module, cached: hack/build-tools.sh) checks the
# release workflow, which only runs on GitHub.
lint: venv
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/lint-imports
	@hack/build-tools.sh actionlint 2>&1 | grep -v 'cached in\|tools ready' || true
	$(ACTIONLINT)

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv tools
	$(BIN)/pytest -q -m integration tests/integration

e2e: venv tools
	$(BIN)/pytest -q -m e2e tests/e2e

# The product on the real node: image, chart, kubelet probes (hack/realnode-up.sh).
realnode: venv tools
	$(BIN)/pytest -q -m realnode tests/e2e

test: venv tools lint typecheck
	$(BIN)/pytest -q tests

crds: venv
	$(BIN)/etcd-registrar crds > crds/serviceregistrations.etcd-registrar.io.yaml
	cp crds/serviceregistrations.etcd-registrar.io.yaml charts/etcd-registrar/files/crds/

# The whole fault matrix, slow cases too (`make test` runs only its quick ones); each run's
# numbers go to .faults-report.jsonl, the table in docs/reliability.md is written from it.
faults: venv tools
	@rm -f .faults-report.jsonl
	FAULTS_REPORT=$(CURDIR)/.faults-report.jsonl $(BIN)/pytest -q -m "faults or not faults" tests/faults

cluster-up: tools
	@hack/cluster-up.sh

cluster-down:
	@hack/cluster-down.sh

# The cluster plus one real node (containerd, runc, kubelet) and the images it runs.
realnode-up: tools
	@hack/realnode-up.sh

demo: venv tools
	@hack/demo.sh

# The benchmark's extra (matplotlib for the plot, py-spy for the profile); its Go programs
# are built and cached by bench/build.sh, which bench.run calls.
$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: venv tools $(BIN)/.bench-installed
	$(BIN)/python -m bench.run --profile

bench-quick: venv tools $(BIN)/.bench-installed
	$(BIN)/python -m bench.run --quick

# Issue #23's scale point: 50,000 pods, the operator alone (set-up, cold start, sweeps,
# churn while sweeps run, leader and standby idle). Too long for CI; never part of `test`.
bench-scale: venv tools $(BIN)/.bench-installed
	$(BIN)/python -m bench.footprint --sizes 50000 --churn-rate 100 --churn-seconds 120

kind-e2e: venv
	@hack/kind-e2e.sh $(ARGS)

clean: cluster-down
	rm -rf $(VENV) .cluster
