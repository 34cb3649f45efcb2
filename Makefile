# CAME reference spec and conformance suite.  Every target does its own setup.
#   make test                      tests of the reference, fixtures, runner and mutants (Hypothesis derandomized)
#   make test-nightly              the same with random seeds and 20x the Hypothesis examples
#   make conform TARGET=mindspore  the suite against one target -> reports/<target>/
#   make conform TARGET=colossalai-dist   ColossalAI's DistributedCAME on 2 and 4 gloo ranks
#   make matrix                    every built-in target -> reports/matrix.{md,json,png}
#   make mutants                   the mutation run -> reports/mutants/
#   make mutants-quick             the mutants against the correct port only: no stacking, no per-dtype runs (CI)
#   make mutants-sharded           the sharding mutants on gloo ranks -> reports/mutants-sharded/
#   make fixtures                  regenerate fixtures/data from the reference
#   make check-fixtures            regenerate in memory and compare with what is stored
#   make bench                     pytest-benchmark figures (docs/benchmarks.md)
PYTHON ?= python3
CORE := .venvs/core
PY := $(CORE)/bin/python
TARGET ?= mindspore
SEED ?= 0
CONFORM_ARGS ?=
BUILTIN_TARGETS := reference reference-paper came-pytorch pytorch-optimizer mindspore reference-dist colossalai colossalai-dist
COLOSSALAI_TARGETS := colossalai colossalai-dist

.PHONY: setup setup-mindspore setup-colossalai test test-nightly conform matrix mutants mutants-quick mutants-sharded fixtures check-fixtures bench clean

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

# ColossalAI 0.5.0 pins torch<=2.5.1: it goes in with --no-deps (BUILD_EXT unset: no CUDA kernels),
# then its other requirements with torch==2.13.0 (pyproject.toml, extra "colossalai").
setup-colossalai: .venvs/colossalai/.stamp
.venvs/colossalai/.stamp: pyproject.toml
	$(PYTHON) -m venv .venvs/colossalai
	.venvs/colossalai/bin/python -m pip install --quiet --upgrade pip
	env -u BUILD_EXT .venvs/colossalai/bin/python -m pip install --quiet --no-deps colossalai==0.5.0
	.venvs/colossalai/bin/python -m pip install --quiet -e '.[colossalai]'
	touch $@

test: setup
	$(PY) -m pytest tests -q

test-nightly: setup
	CAME_HYPOTHESIS_PROFILE=nightly $(PY) -m pytest tests -q

# The MindSpore environment is installed only when a target needs it.
conform: setup $(if $(filter mindspore,$(TARGET)),setup-mindspore) $(if $(filter $(COLOSSALAI_TARGETS),$(TARGET)),setup-colossalai)
	$(PY) -m came_conformance run --target $(TARGET) --seed $(SEED) $(CONFORM_ARGS)

matrix: setup setup-mindspore setup-colossalai
	$(PY) -m came_conformance.matrix --seed $(SEED) $(BUILTIN_TARGETS)

mutants: setup
	$(PY) -m came_conformance.mutation --seed $(SEED)

mutants-quick: setup
	$(PY) -m came_conformance.mutation --seed $(SEED) --no-stacking --dtypes '' --port-controls --out reports/mutants-quick

# The sharding mutants on real gloo ranks, with the sharded reference as their control.
mutants-sharded: setup
	$(PY) -m came_conformance.mutation --seed $(SEED) --sharded-only --out reports/mutants-sharded

fixtures: setup
	$(PY) -m came_conformance.fixtures.generate

check-fixtures: setup
	$(PY) -m came_conformance.fixtures.check

bench: setup
	$(PY) -m pytest benchmarks -p no:cacheprovider --benchmark-enable --benchmark-only

clean:
	rm -rf reports/*/ .venvs
