# The two commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test up down status bench clean

setup: $(VENV)/.installed
	@bash deploy/local/setup-system.sh
	@$(BIN)/reformspor kafka fetch >/dev/null

$(VENV)/.installed: pyproject.toml
	@echo "python: creating $(VENV) and installing reformspor with test extras"
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e ".[test]"
	@touch $@

demo: setup
	@$(BIN)/reformspor demo

up: setup
	@$(BIN)/reformspor up

down:
	@$(BIN)/reformspor down

status:
	@$(BIN)/reformspor status

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: setup
	@$(BIN)/pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

bench: setup
	@$(BIN)/pip install -q -e ".[test,bench]"
	@$(BIN)/python bench/run.py

clean: down
	rm -rf .reformspor
