# `make test` and `make demo` each create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint docs bench results screen clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: a plain `pip install torch` would pull a build timm's torchvision import breaks on.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m gaternet_zoo.demo

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
# Training images/s of each model, measured side by side by `python bench/bench_depths.py` (its last line).
IMG_PER_SEC := cifar_resnet20=1704 gaternet_resnet20=806 cifar_resnet56=587 gaternet_resnet56=372
# The option screening of issue 11: trains (or resumes) every arm on a validation split; about an hour on 2 cores.
SCREENING := recipes/screening/cifar10_resnet20.yaml
screen: $(STAMP)
	$(PY) tools/screen.py run $(SCREENING)
results: $(STAMP)
	$(PY) tools/screen.py table $(SCREENING) --out docs/results/cifar10_resnet20_screening.md
	$(PY) tools/plot_training_curves.py $(wildcard docs/results/runs/screen_c10_resnet20/*) --split val \
		--out docs/img/cifar10_resnet20_screening_curves.png
	$(PY) tools/depth_table.py $(DEPTH_RUNS) --img-per-sec $(IMG_PER_SEC) --out docs/results/cifar10_depth_table.md
	$(PY) tools/results_table.py $(RESULT_WEIGHTS) --out docs/results/cifar10_resnet20_table.md
	$(PY) tools/results_table.py $(RESULT_WEIGHTS_56) --out docs/results/cifar10_resnet56_table.md
	$(PY) tools/plot_training_curves.py $(RESULT_WEIGHTS) --out docs/img/cifar10_resnet20_curves.png
	$(PY) tools/plot_training_curves.py $(RESULT_WEIGHTS_56) --out docs/img/cifar10_resnet56_curves.png
	$(PY) tools/seed_table.py $(SEED_RUNS) --out docs/results/cifar10_resnet20_seeds.md
	$(PY) tools/seed_table.py $(SEED_RUNS_56) --out docs/results/cifar10_resnet56_seeds.md
	$(VENV)/bin/gaternet-zoo analyze local-dir:weights/gaternet_resnet20.cifar10 --data $(DATA) --split test \
		--out docs/img/gaternet_resnet20_cifar10
	$(VENV)/bin/gaternet-zoo analyze local-dir:weights/gaternet_resnet56.cifar10 --data $(DATA) --split test \
		--out docs/img/gaternet_resnet56_cifar10

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .venv-olah site build *.egg-info
