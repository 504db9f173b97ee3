# Two entry points: `make run` runs the notebook sequence on the default (cpu) profile, and
# `make test` runs every test, notebooks included. Both create .venv first when it is missing.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PROFILE ?= cpu
STAMP := $(VENV)/.medlnkit-installed

.PHONY: setup run test clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh scripts/setup_wordnet.sh
	MEDLNKIT_VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/medlnkit run --profile $(PROFILE)

test: $(STAMP)
	$(PYTHON) -m pytest

clean-runs:
	rm -rf runs
