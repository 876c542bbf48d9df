# `make test`, `make test-fast`, `make demo` and `make train` each create .venv and install what they need on a
# fresh machine. Commands printed in the docs (gaternet-zoo, accelerate, python) run inside it: `source
# .venv/bin/activate` first, or use these targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Cores for `make train`: without --num_cpu_threads_per_process, `accelerate launch` trains on one CPU core.
NPROC := $(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
# Arguments of `make train` (for recipes/train.py) and of `make demo` (for python -m gaternet_zoo.demo).
ARGS ?=

.PHONY: test test-fast demo train lint docs bench results screen clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: a plain `pip install torch` would pull a build timm's torchvision import breaks on.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The whole suite (CI runs this). It also makes .venv-olah (a local Hub server for the hub tests, ~13 s once) and
# fills the datasets cache (~/.cache/huggingface, ~142 MB).
test: $(STAMP)
	$(PY) -m pytest -q

# The tests to run after every change: everything but the multi-process/end-to-end runs (`slow`) and the local Hub
# server (`hub`); `make test` runs those too.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not hub"

demo: $(STAMP)
	$(PY) -m gaternet_zoo.demo $(ARGS)

# `accelerate launch recipes/train.py $(ARGS)` with every launcher value given (recipes/accelerate/default.yaml:
# no "values not passed" warnings), every core, and no launcher traceback after the recipe's own error message.
train: $(STAMP)
	$(VENV)/bin/accelerate launch --config_file recipes/accelerate/default.yaml \
		--num_cpu_threads_per_process $(NPROC) --quiet recipes/train.py $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check gaternet_zoo recipes tests bench tools hubconf.py

docs: $(STAMP)
	$(PY) -m pip install -q -e '.[docs]'
	$(PY) -m mkdocs build --strict

# Regenerate docs/results.md's tables and figures from the published weight folders and committed run records (no
# retraining; the gate analysis reads the CIFAR-10 test split from DATA).
DATA ?= ../shared/data/cifar10
RESULT_WEIGHTS := weights/cifar_resnet20.cifar10 weights/gaternet_resnet20.cifar10
RESULT_WEIGHTS_56 := weights/cifar_resnet56.cifar10 weights/gaternet_resnet56.cifar10
# Every finished run of the comparison (plain first: it is the baseline), as committed run records.
SEED_RUNS := weights/cifar_resnet20.cifar10 docs/results/runs/c10_resnet20_e30_s1 weights/gaternet_resnet20.cifar10 \
	docs/results/runs/c10_gaternet_resnet20_e30_s1
SEED_RUNS_56 := weights/cifar_resnet56.cifar10 docs/results/runs/c10_resnet56_e30_s1 weights/gaternet_resnet56.cifar10 \
	docs/results/runs/c10_gaternet_resnet56_e30_s1
DEPTH_RUNS := $(SEED_RUNS) $(SEED_RUNS_56)
# The lead table also takes the full-schedule (200-epoch) runs of the weights campaign; the depth table compares the
# 30-epoch runs only.
LEAD_RUNS := $(DEPTH_RUNS) weights/cifar_resnet20.cifar10_e200
# Training images/s of each model, measured side by side by `python -m bench.bench_depths` (its last line).
IMG_PER_SEC := cifar_resnet20=1704 gaternet_resnet20=806 cifar_resnet56=587 gaternet_resnet56=372
# The option screening of issue 11: trains (or resumes) every arm on a validation split; about an hour on 2 cores.
SCREENING := recipes/screening/cifar10_resnet20.yaml
screen: $(STAMP)
	$(PY) -m tools.screen run $(SCREENING)
results: $(STAMP)
	$(PY) -m tools.screen table $(SCREENING) --out docs/results/cifar10_resnet20_screening.md
	$(PY) -m tools.plot_training_curves $(wildcard docs/results/runs/screen_c10_resnet20/*) --split val \
		--out docs/img/cifar10_resnet20_screening_curves.png
	$(PY) -m tools.lead_table $(LEAD_RUNS) --references docs/results/external_references.yaml \
		--out docs/results/cifar10_lead_table.md
	$(PY) -m tools.depth_table $(DEPTH_RUNS) --img-per-sec $(IMG_PER_SEC) --out docs/results/cifar10_depth_table.md
	$(PY) -m tools.results_table $(RESULT_WEIGHTS) --out docs/results/cifar10_resnet20_table.md
	$(PY) -m tools.results_table $(RESULT_WEIGHTS_56) --out docs/results/cifar10_resnet56_table.md
	$(PY) -m tools.plot_training_curves $(RESULT_WEIGHTS) --out docs/img/cifar10_resnet20_curves.png
	$(PY) -m tools.plot_training_curves $(RESULT_WEIGHTS_56) --out docs/img/cifar10_resnet56_curves.png
	$(PY) -m tools.seed_table $(SEED_RUNS) --out docs/results/cifar10_resnet20_seeds.md
	$(PY) -m tools.seed_table $(SEED_RUNS_56) --out docs/results/cifar10_resnet56_seeds.md
	$(VENV)/bin/gaternet-zoo analyze local-dir:weights/gaternet_resnet20.cifar10 --data $(DATA) --split test \
		--out docs/img/gaternet_resnet20_cifar10
	$(VENV)/bin/gaternet-zoo analyze local-dir:weights/gaternet_resnet56.cifar10 --data $(DATA) --split test \
		--out docs/img/gaternet_resnet56_cifar10

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .venv-olah site build *.egg-info
