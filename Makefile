# Tollgate: `make up` runs the whole system on this machine, `make test` runs the test suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# uv on PATH, or else the one `make bootstrap` installed into this python3 (`python3 -m uv`).
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen

.PHONY: help bootstrap up down status test test-unit test-cluster lint fmt docs bench clean
.PHONY: compose-bootstrap images compose-up compose-down compose-test test-containers

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

bootstrap: ## install what is missing: uv, Python deps, JDK, Maven, PostgreSQL, Redis, Kafka jars
	@bash deploy/bootstrap.sh

up: bootstrap ## start Kafka, PostgreSQL, Redis and the services (TOLLGATE_GATEWAY_REPLICAS=N: N gateways; TOLLGATE_CLUSTER=1: 3 Kafka nodes, a Redis Cluster, 2 of each scaled service; TOLLGATE_CATALOGUE=path: your own model catalogue)
	@$(RUN) python -m deploy.stack up

down: ## stop everything `make up` started, by PID (and the secured engines, when they ran)
	@$(RUN) python -m deploy.stack down
	@$(RUN) python -m deploy.secure down

status: ## what runs: every server, node and replica, with PID and port, and the catalogue the services read
	@$(RUN) python -m deploy.stack status

test: bootstrap ## the whole test suite against real Kafka, PostgreSQL and Redis (but the cluster and compose tests: their own targets)
	@$(RUN) pytest

test-unit: bootstrap ## the quick tier, in seconds: the tests marked `unit` (pure logic, no server needed or touched)
	@$(RUN) pytest -m unit

test-cluster: bootstrap ## the tests that start a Kafka cluster or a Redis Cluster of their own (CI's second step)
	@$(RUN) pytest -m cluster

test-secure: bootstrap ## the tests on the secured engines: Kafka SASL_SSL with SCRAM and ACLs, Redis TLS and ACL users, PostgreSQL hostssl (deploy/secure.py)
	@$(RUN) pytest -m secure

lint: bootstrap ## ruff and mypy (strict)
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .
	@$(RUN) mypy .

fmt: bootstrap ## format and autofix with ruff
	@$(RUN) ruff format .
	@$(RUN) ruff check --fix .

docs: bootstrap ## docs/asyncapi.json and docs/events.md from shared/bus_spec.py (a test fails when stale)
	@$(RUN) python -m deploy.docs

bench: bootstrap ## the benchmarks bench/*.py (bench/lib/ and bench/_*.py are their helpers)
	@for b in bench/[!_]*.py; do echo "== $$b"; $(RUN) python $$b || exit 1; done

compose-bootstrap: ## install what the compose path needs: Debian's docker.io, docker-compose, debootstrap
	@bash deploy/bootstrap.sh --compose

images: bootstrap compose-bootstrap ## build local stand-ins of the official images (no registry needed); cached
	@$(RUN) python -m deploy.compose images

compose-up: bootstrap compose-bootstrap ## docker-compose.yml on this machine: dockerd if none answers, images, health, first key (TOLLGATE_CATALOGUE=path: your own catalogue)
	@$(RUN) python -m deploy.compose up

compose-down: ## remove what compose-up started (containers, network; its dockerd); VOLUMES=1 drops the data
	@$(RUN) python -m deploy.compose down $(if $(VOLUMES),--volumes)

compose-test: bootstrap compose-bootstrap ## the compose smoke test: up, openai SDK calls, ledgers, revocation, down
	@$(RUN) pytest -m compose tests/compose

test-containers: bootstrap compose-bootstrap ## the foundation and end-to-end tests on Kafka, PostgreSQL and Redis in containers (testcontainers)
	@TOLLGATE_TEST_SERVERS=containers $(RUN) pytest tests/foundation tests/e2e

clean: down ## stop everything and delete the run folder (data included)
	rm -rf .run
