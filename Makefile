# `make deploy`: set-up + the deploy graph in simulation with the shipped model.
# `make test`:   set-up + the test suite.
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup deploy test bench sanity
setup:
	@scripts/setup_env.sh

deploy: setup
	@$(ENV) dp-ros deploy --episodes $${EPISODES:-3}

test: setup
	@$(ENV) python -m pytest -q test $(PYTEST_ARGS)

bench: setup
	@$(ENV) dp-ros bench inference --preset paper-real && $(ENV) dp-ros bench inference --preset sim

sanity: setup
	@$(ENV) dp-ros sanity lqr && $(ENV) dp-ros sanity multimodal
