# Two commands on a fresh machine:  `make demo` (set up, run the demo study, write its report)
# and `make test` (set up, run the tests). `make setup` alone installs into .venv.
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned here (not in pyproject): these two come from the local disk.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup data demo report test test-all lint clean
setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,cluster,wandb]'
	touch $@

# Fashion-MNIST from Debian (optional: its tests and studies are skipped/fail clearly without it)
data:
	@test -d /usr/share/datasets/fashion-mnist || \
	  ( (command -v sudo >/dev/null && sudo apt-get install -y dataset-fashion-mnist) || \
	    apt-get install -y dataset-fashion-mnist )

# Your own run of the demo; results/demo is the committed reference run (launching into it
# would skip every point: its rows exist).
DEMO_DIR ?= results/demo_local
demo: setup
	$(BIN)/benchbench study=demo results.dir=$(DEMO_DIR)
	$(BIN)/benchbench-report $(DEMO_DIR)

test: setup
	$(BIN)/pytest -q -n 2

test-all: setup
	$(BIN)/pytest -q -n 2 -m "slow or not slow"

lint: setup
	$(BIN)/ruff check benchbench tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
