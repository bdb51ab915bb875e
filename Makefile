# streamops: two commands do everything on a fresh machine.
#   make run   - set up, start the local stack, run the sample jobs, print a summary, stop the stack
#   make test  - set up, run the whole test suite
# Everything is installed into .cache/ inside the project, idempotently.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

CACHE   := .cache
VENV    := $(CACHE)/venv
PY      := $(VENV)/bin/python
NODE_DIR := $(CACHE)/node
LOCAL_PKG := src/streamops/localstack
PY_STAMP   := $(VENV)/.stamp-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
NODE_STAMP := $(NODE_DIR)/.stamp-$(shell cat $(LOCAL_PKG)/package-lock.json | sha1sum | cut -c1-12)
# JVM artifacts (Spark's Kafka connector + Delta; the Kafka broker), pinned by a pom and a
# jars.lock (file name + sha256) each, copied into .cache/jvm/<set>; Maven's own repository
# lives in .cache/m2, so nothing outside the project is touched.
JVM_SRC  := $(LOCAL_PKG)/jvm
JVM_DIR  := $(CACHE)/jvm
M2_REPO  := $(abspath $(CACHE)/m2)
JVM_STAMP := $(JVM_DIR)/.stamp-$(shell cat $(JVM_SRC)/*/pom.xml $(JVM_SRC)/*/jars.lock | sha1sum | cut -c1-12)
# The local Databricks runtime's wheelhouse (tests/dbr_runtime): lock-pinned wheels of the
# dependencies Databricks Runtime 18 does not preinstall, so cluster runs in tests install offline.
DBR_WHEELS := $(CACHE)/dbr/wheels
DBR_STAMP  := $(DBR_WHEELS)/.stamp-$(shell cat requirements.lock pyproject.toml tests/dbr_runtime/packages.py 2>/dev/null | sha1sum | cut -c1-12)
# pip's per-machine config may list local mirrors that do not exist; that noise is not ours.
PIP_QUIET := grep -v -e "is ignored: it is neither a file nor a directory" || true

export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
# Spark otherwise resolves the host name and warns when it maps to loopback.
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: help setup run test lint fmt bench lock lock-jvm clean check-tools chromium

help:
	@echo "make run    - run the sample streaming jobs end to end on the local target"
	@echo "make test   - run the whole test suite (sets everything up first)"
	@echo "make lint   - ruff + mypy + the import layering contract (pyproject.toml)"
	@echo "make bench  - run the benchmarks in bench/, results in bench/results/"
	@echo "make docs   - build the documentation site (MkDocs, offline) into $(CACHE)/site"
	@echo "make setup  - only install (venv, pinned packages, JVM jars, Azurite) into $(CACHE)/"

check-tools:
	@command -v python3 >/dev/null || { echo "python3 (>=3.11) is required"; exit 1; }
	@command -v java >/dev/null || { echo "Java 17 is required by Spark: apt-get install -y openjdk-17-jre-headless"; exit 1; }
	@command -v npm >/dev/null || { echo "Node.js 20 + npm are required for Azurite: apt-get install -y nodejs npm"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven 3.8+ is required to fetch the pinned JVM jars: apt-get install -y maven"; exit 1; }

setup: check-tools $(PY_STAMP) $(NODE_STAMP) $(JVM_STAMP) $(DBR_STAMP)

$(DBR_STAMP): $(PY_STAMP) requirements.lock pyproject.toml tests/dbr_runtime/packages.py
	@echo "==> downloading the local Databricks runtime's wheelhouse into $(DBR_WHEELS)"
	@$(PY) -m tests.dbr_runtime.wheelhouse $(DBR_WHEELS) 2>&1 | $(PIP_QUIET)
	@test -f $(DBR_WHEELS)/wheelhouse.json  # written only when every wheel is there
	@rm -f $(DBR_WHEELS)/.stamp-*; touch $@

$(JVM_STAMP): $(wildcard $(JVM_SRC)/*/pom.xml) $(wildcard $(JVM_SRC)/*/jars.lock)
	@for set in spark kafka; do \
	  echo "==> installing pinned JVM jars ($$set) into $(JVM_DIR)/$$set"; \
	  rm -rf $(JVM_DIR)/$$set; \
	  mvn -q -B -f $(JVM_SRC)/$$set/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
	    -Dmaven.repo.local=$(M2_REPO) -DoutputDirectory=$(abspath $(JVM_DIR))/$$set; \
	  ( cd $(JVM_DIR)/$$set && sha256sum --quiet --strict -c $(abspath $(JVM_SRC))/$$set/jars.lock ) \
	    || { echo "$(JVM_DIR)/$$set does not match $(JVM_SRC)/$$set/jars.lock: run make lock-jvm after changing a pom"; exit 1; }; \
	  diff <(ls $(JVM_DIR)/$$set) <(awk '{print $$2}' $(JVM_SRC)/$$set/jars.lock | sort) >/dev/null \
	    || { echo "$(JVM_DIR)/$$set holds other jars than $(JVM_SRC)/$$set/jars.lock: run make lock-jvm"; exit 1; }; \
	done
	@rm -f $(JVM_DIR)/.stamp-*; touch $@

$(PY_STAMP): requirements.lock pyproject.toml
	@echo "==> installing pinned Python packages into $(VENV) (first time: a few minutes)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade "pip>=24" 2>&1 | $(PIP_QUIET)
	@$(PY) -m pip install -q --no-deps -r requirements.lock 2>&1 | $(PIP_QUIET)
	@$(PY) -m pip install -q --no-deps -e . 2>&1 | $(PIP_QUIET)
	@$(PY) -c "import streamops, pyspark, deltalake, confluent_kafka, airflow" 
	@rm -f $(VENV)/.stamp-*; touch $@

$(NODE_STAMP): $(LOCAL_PKG)/package.json $(LOCAL_PKG)/package-lock.json
	@echo "==> installing Azurite into $(NODE_DIR)"
	@mkdir -p $(NODE_DIR)
	@cp $(LOCAL_PKG)/package.json $(LOCAL_PKG)/package-lock.json $(NODE_DIR)/
	@cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error >/dev/null
	@rm -f $(NODE_DIR)/.stamp-*; touch $@

run: setup
	$(VENV)/bin/streamops demo --bundle bundle.yml --target local

# Debian's chromium for the UI test (tests/e2e/test_deploy_ui.py); skipped when present.
chromium:
	@test -x /usr/bin/chromium || { echo "==> installing Debian's chromium (UI test)"; \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: setup chromium
	$(PY) -m pytest -q --durations=30

lint: setup
	$(VENV)/bin/ruff check src tests jobs dags plugins bench
	$(VENV)/bin/ruff format --check src tests jobs dags plugins bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports --no-logo --cache-dir $(CACHE)/import-linter
	$(PY) docs/check.py

fmt: setup
	$(VENV)/bin/ruff format src tests jobs dags plugins bench
	$(VENV)/bin/ruff check --fix src tests jobs dags plugins bench

# The documentation site: MkDocs + Material pinned by docs/requirements.lock, in a venv of their
# own (their pins never meet the project's), built offline into .cache/site.
DOCS_VENV  := $(CACHE)/docs-venv
DOCS_STAMP := $(DOCS_VENV)/.stamp-$(shell cat docs/requirements.lock | sha1sum | cut -c1-12)
.PHONY: docs

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --quiet
	@echo "==> docs built: $(CACHE)/site/index.html"

$(DOCS_STAMP): docs/requirements.lock
	@echo "==> installing MkDocs (pinned by docs/requirements.lock) into $(DOCS_VENV)"
	@test -x $(DOCS_VENV)/bin/python || python3 -m venv $(DOCS_VENV)
	@$(DOCS_VENV)/bin/python -m pip install -q --no-deps -r docs/requirements.lock 2>&1 | $(PIP_QUIET)
	@$(DOCS_VENV)/bin/mkdocs --version >/dev/null
	@rm -f $(DOCS_VENV)/.stamp-*; touch $@

bench: setup
	@shopt -s nullglob; for b in bench/*.py; do echo "==> $$b"; $(PY) $$b; done

# Regenerate requirements.lock from requirements.in in a scratch venv (needs the registry).
lock:
	rm -rf $(CACHE)/lockvenv && python3 -m venv $(CACHE)/lockvenv
	$(CACHE)/lockvenv/bin/pip install -q -r requirements.in 2>&1 | $(PIP_QUIET)
	$(CACHE)/lockvenv/bin/pip freeze --all --exclude-editable | grep -v -e "@ file" -e "^pip==" > requirements.lock
	rm -rf $(CACHE)/lockvenv

# Re-resolve the JVM poms and record each jar's sha256 in jars.lock (after changing a pom).
lock-jvm:
	@for set in spark kafka; do \
	  rm -rf $(CACHE)/lockjvm && \
	  mvn -q -B -f $(JVM_SRC)/$$set/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
	    -Dmaven.repo.local=$(M2_REPO) -DoutputDirectory=$(abspath $(CACHE))/lockjvm && \
	  ( cd $(CACHE)/lockjvm && sha256sum *.jar ) > $(JVM_SRC)/$$set/jars.lock; \
	done; rm -rf $(CACHE)/lockjvm

clean:
	-$(VENV)/bin/streamops local down --bundle bundle.yml 2>/dev/null
	rm -rf $(CACHE)
