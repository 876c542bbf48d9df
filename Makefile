# `make test` and `make demo` each create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint docs bench clean

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
	$(PY) -m ruff check gaternet_zoo recipes tests bench hubconf.py

docs: $(STAMP)
	$(PY) -m pip install -q -e '.[docs]'
	$(PY) -m mkdocs build --strict

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .venv-olah site build *.egg-info
