# CAME reference spec and conformance suite.  Every target does its own setup.
#   make test                      tests of the reference, fixtures, runner and mutants (Hypothesis derandomized)
#   make test-nightly              the same with random seeds and 20x the Hypothesis examples
#   make conform TARGET=mindspore  the suite against one target -> reports/<target>/
#   make matrix                    every built-in target -> reports/matrix.{md,json,png}
#   make mutants                   the mutation run -> reports/mutants/
#   make fixtures                  regenerate fixtures/data from the reference
#   make check-fixtures            regenerate in memory and compare with what is stored
#   make bench                     pytest-benchmark figures (docs/benchmarks.md)
PYTHON ?= python3
CORE := .venvs/core
PY := $(CORE)/bin/python
TARGET ?= mindspore
SEED ?= 0
CONFORM_ARGS ?=
BUILTIN_TARGETS := reference reference-paper came-pytorch pytorch-optimizer mindspore

.PHONY: setup setup-mindspore test test-nightly conform matrix mutants fixtures check-fixtures bench clean

setup: $(CORE)/.stamp
$(CORE)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(CORE)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[pytorch]'
	touch $@

setup-mindspore: .venvs/mindspore/.stamp
.venvs/mindspore/.stamp: pyproject.toml
	$(PYTHON) -m venv .venvs/mindspore
	.venvs/mindspore/bin/python -m pip install --quiet --upgrade pip
	.venvs/mindspore/bin/python -m pip install --quiet -e '.[mindspore]'   # pins: pyproject.toml
	touch $@

test: setup
	$(PY) -m pytest tests -q

test-nightly: setup
	CAME_HYPOTHESIS_PROFILE=nightly $(PY) -m pytest tests -q

# The MindSpore environment is installed only when a target needs it.
conform: setup $(if $(filter mindspore,$(TARGET)),setup-mindspore)
	$(PY) -m came_conformance run --target $(TARGET) --seed $(SEED) $(CONFORM_ARGS)

matrix: setup setup-mindspore
	$(PY) -m came_conformance.matrix --seed $(SEED) $(BUILTIN_TARGETS)

mutants: setup
	$(PY) -m came_conformance.mutation --seed $(SEED)

fixtures: setup
	$(PY) -m came_conformance.fixtures.generate

check-fixtures: setup
	$(PY) -m came_conformance.fixtures.check

bench: setup
	$(PY) -m pytest benchmarks -p no:cacheprovider --benchmark-enable --benchmark-only

clean:
	rm -rf reports/*/ .venvs
