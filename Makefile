# Two commands on a fresh machine:  `make demo` (set up, run the demo study, write its report)
# and `make test` (set up, run the tests). `make setup` alone installs into .venv.
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned here (not in pyproject): these two come from the local disk.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup data browser demo report test test-all lint mutants clean install-check gpu-prep gpu-install \
	gpu-bench gpu-study bench-loader bench-subsets bench-planner
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

# Debian's chromium for the report.html browser test (tests/test_report_html.py, driven by
# Playwright from the dev extra; never `playwright install`). Without it the test is skipped
# and says so; so is this target, where apt-get cannot install (no root).
browser:
	@command -v chromium >/dev/null || \
	  ( (command -v sudo >/dev/null && sudo apt-get install -y chromium chromium-driver) || \
	    apt-get install -y chromium chromium-driver ) || \
	  echo "make browser: chromium not installed; the report.html browser test will be skipped"

# Your own run of the demo; results/demo is the committed reference run (launching into it
# would skip every point: its rows exist).
DEMO_DIR ?= results/demo_local
demo: setup
	$(BIN)/benchbench study=demo results.dir=$(DEMO_DIR)
	$(BIN)/benchbench -m task=measure measure.throughput=true study.name=demo results.dir=$(DEMO_DIR) \
	  model=vit_micro,hybrid_micro,bit_micro model.patch_size=8,16
	$(BIN)/benchbench-report $(DEMO_DIR)

test: setup browser
	$(BIN)/pytest -q -n 2

test-all: setup browser
	$(BIN)/pytest -q -n 2 -m "slow or not slow"

# A non-editable install (as a cluster image gets with `pip install .`), used from a folder
# outside the checkout: every config group and study must ship inside the package.
CHECK_DIR ?= /tmp/benchbench-install-check
install-check:
	rm -rf $(CHECK_DIR) && $(PY) -m venv $(CHECK_DIR)/venv
	$(CHECK_DIR)/venv/bin/pip install -q $(TORCH) .
	cd $(CHECK_DIR) && ./venv/bin/benchbench task=measure model=vit_micro results.dir=$(CHECK_DIR)/measure
	cd $(CHECK_DIR) && ./venv/bin/benchbench study=demo debug=smoke
	test $$(ls $(CHECK_DIR)/results/smoke/demo/runs/*.json | wc -l) = 10
	@echo "install-check: a non-editable install runs task=measure and study=demo debug=smoke"

# Data-path benchmarks (README, "Large datasets"): JSON lines on stdout
bench-loader: setup
	$(BIN)/python -m benchbench.bench.loader $(BENCH_ARGS)

bench-subsets: setup
	$(BIN)/python -m benchbench.bench.subsets $(BENCH_ARGS)

# The adaptive planner against the full grid and fixed orders (README, "Planning"): writes
# results/bench_planner/{runs.csv,summary.md}; numpy/scipy only, well under 2 minutes
bench-planner: setup
	$(BIN)/python -m benchbench.bench.planner $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check benchbench tests

# Mutation testing of the pure core (not in CI): each module's mutants against its own fast
# tests, in a temp copy (tests/mutants.py). MUTANT_SAMPLE=N tests every N-th mutant by id.
# Entries are MODULE=PYTEST-ARGS: the pure core (run ids, Pareto, equal compute, fits, FLOP
# counting, nested subsets).
MUTANT_SAMPLE  ?= 1
MUTANT_MODULES ?= \
	"benchbench/results.py=tests/test_results.py tests/test_fuzz.py" \
	"benchbench/report/pareto.py=tests/test_report_stats.py -k 'pareto or frontier or owner'" \
	"benchbench/report/compare.py=tests/test_report_stats.py" \
	"benchbench/report/scaling.py=tests/test_report_stats.py" \
	"benchbench/measure/flops.py=+conftest tests/test_flops.py" \
	"benchbench/data/subsets.py=+conftest tests/test_data.py tests/test_recipes.py -k 'subset or val or nested'"
mutants: setup
	$(BIN)/pip install -q 'mutmut==2.5.1'
	$(BIN)/python tests/mutants.py --mutmut $(abspath $(BIN))/mutmut --sample $(MUTANT_SAMPLE) $(MUTANT_MODULES)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# --- A session with the GPU machine (device tool): its python3 has torch, no network. ---
# Here, `make gpu-prep`: what its image lacks, into ignored folders to carry with the call:
#   .whl/ (pure-Python wheels: hydra, omegaconf, fvcore, iopath, timm as pinned here) and
#   .data/fashion-mnist/ (from the Debian package); timm's benchmark.py goes in
#   .third_party/timm/ (README, "Performance on a GPU"). There, `make gpu-bench OUT=$$OUT`
#   (about 9 minutes) and `make gpu-study OUT=$$OUT`, carrying .whl .data .third_party.
GPU_WHEELS := hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 \
	fvcore==0.1.5.post20221221 iopath==0.1.10 yacs==0.1.8 termcolor==3.3.0 timm==1.0.31
GPU_PY     ?= python3
OUT        ?= results
GPU_BENCH_ARGS ?=
GPU_DEVICE ?= cuda
GPU_STUDY  ?= data.train_size=5000,20000,60000 train.epochs=30 \
	model=vit_ti,bit_r50x1,hybrid_r26_vit_s
gpu-prep: setup data
	rm -rf .whl && mkdir -p .whl .data
	$(BIN)/pip download -q --no-deps -d .whl $(GPU_WHEELS)
	cd .whl && ../$(BIN)/pip wheel -q --no-deps -w . *.tar.gz && rm -f *.tar.gz
	rm -rf .data/fashion-mnist && cp -r /usr/share/datasets/fashion-mnist .data/

gpu-install:
	$(GPU_PY) -m pip install -q --no-index --no-deps .whl/*.whl

gpu-bench: gpu-install
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m benchbench.gpu_bench --out $(OUT)/gpu_measure \
	  $$(test -f .third_party/timm/benchmark.py && echo --timm-benchmark .third_party/timm/benchmark.py) \
	  $(GPU_BENCH_ARGS)

gpu-study: gpu-install
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m benchbench.cli study=fashion_mnist_scaling device=$(GPU_DEVICE) \
	  data.root=$(CURDIR)/.data/fashion-mnist \
	  results.dir=$(OUT)/gpu_train/fashion_mnist_scaling $(GPU_STUDY)
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m benchbench.report.cli $(OUT)/gpu_train/fashion_mnist_scaling
