# `make demo` and `make test` each work on a fresh machine: they build .venv from pyproject.toml
# when it is missing or older than pyproject.toml, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONWARNINGS := ignore::DeprecationWarning

.PHONY: demo test bench bench-check bench-instructions venv bench-venv clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,examples]'
	touch $@

# The benchmark needs only the anchors and matplotlib, not the test suite's TensorFlow: from scratch
# this install takes about a minute, the test one over two.
$(VENV)/.bench-installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python examples/image_filter.py
	$(BIN)/python examples/gan_sharing.py
	$(BIN)/python examples/embedding_auto_reuse.py
	@if [ -f examples/train_digits.py ]; then $(BIN)/python examples/train_digits.py; fi

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests

bench: $(VENV)/.bench-installed
	$(BIN)/python bench/run.py

# Rerun the benchmark into a new directory and compare it with the committed bench/results/latest.json.
bench-check: $(VENV)/.bench-installed
	$(BIN)/python bench/run.py --check

# Instruction counts of the two closest targets (needs valgrind): repeatable where timings move by 1-2%.
bench-instructions: $(VENV)/.bench-installed
	$(BIN)/python bench/instructions.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
