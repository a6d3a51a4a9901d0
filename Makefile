# The two commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test up down status bench clean lock

setup: $(VENV)/.installed
	@bash deploy/local/setup-system.sh
	@$(BIN)/reformspor kafka fetch >/dev/null

# Installs come from the lock file (exact versions and hashes), so a fresh machine months
# from now gets the versions the tests passed with. `make lock` regenerates it.
$(VENV)/.installed: requirements.lock pyproject.toml
	@echo "python: creating $(VENV) and installing the locked dependencies (requirements.lock)"
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --require-hashes -r requirements.lock
	@$(BIN)/pip install -q --no-deps -e .
	@touch $@

lock:
	@test -x $(BIN)/uv || $(BIN)/pip install -q uv
	@$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 --generate-hashes -q -o requirements.lock
	@$(BIN)/uv pip compile pyproject.toml --extra test --extra bench --python-version 3.11 --generate-hashes -q -o requirements-bench.lock
	@echo "wrote requirements.lock and requirements-bench.lock"

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
	@$(BIN)/pip install -q --require-hashes -r requirements-bench.lock && $(BIN)/pip install -q --no-deps -e .
	@$(BIN)/python bench/run.py

clean: down
	rm -rf .reformspor
