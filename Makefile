# `make train` and `make test` set everything up on a fresh machine (a .venv in this folder).
# Choose another torch build with e.g.
#   make install TORCH=torch==2.13.0 TORCH_PIP_ARGS="--index-url <your CUDA wheel index>"
# torchvision (needed by the models extra) is installed with torch, from the same index, at the
# release built for that torch: change both together.
ifeq ($(OS),Windows_NT)  # make from Git Bash or MSYS2: a venv keeps its programs in Scripts
PYTHON ?= python
BIN = $(VENV)/Scripts
else
PYTHON ?= python3
BIN = $(VENV)/bin
endif
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCHVISION ?= torchvision==0.28.0
TORCH_PIP_ARGS ?=
ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist workers: auto = one per physical core; each test file runs whole on one worker, the
# files in the order tests/conftest.py gives them (the most slow tests first).
TEST_WORKERS ?= auto
PARALLEL = $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

STAMP := $(VENV)/.seg-installed

.PHONY: install train sweep test test-fast docs constraints lint format tensorboard clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH)" "$(TORCHVISION)"
	$(BIN)/python -m pip install --quiet -e ".[dev,export,sweep,mlflow,wandb,models,stream]" -c constraints.txt
	touch $(STAMP)

train: install  ## train on the built-in synthetic data (pass overrides with ARGS="...")
	$(BIN)/python -m seg.train $(ARGS)

sweep: install  ## a CPU-sized learning-rate sweep on the built-in data, with its summary table
	$(BIN)/python -m seg.train -m model.optimizer.lr=1e-2,3e-3,1e-3,3e-4 trainer.max_epochs=6 $(ARGS)

test: install  ## every test, one worker per core (TEST_WORKERS=1: one process)
	$(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS)

test-fast: install  ## the tests not marked slow
	$(BIN)/python -m pytest $(PARALLEL) -m "not slow" $(PYTEST_ARGS)

docs: install  ## regenerate docs/configuration.md from the composed configs
	$(BIN)/python -m seg.reports.config_docs

constraints: install  ## pin every package of this environment (the tested set) in constraints.txt
	( echo "# Every package the test suite passed with (Linux, CPU torch); regenerate: make constraints."; \
	  echo "# pip install -c constraints.txt ... takes these versions; it installs nothing by itself."; \
	  $(BIN)/python -m pip list --format=freeze --exclude-editable | grep -v -E "^(pip|seg)==" | sed -E 's/\+[A-Za-z0-9.]+$$//' ) > constraints.txt

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

tensorboard: install
	$(BIN)/tensorboard --logdir outputs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
