# One entry point for set-up, demo and tests. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
# A plain `torch` requirement pulls a multi-GB CUDA build; preinstall a CPU build unless torch is already there.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# The minimum-versions environment: a separate venv with the oldest supported release of each dependency
# (ci/constraints-min.txt, setup.cfg's lower bounds) and the CPU torch of TORCH_SPEC (README, "Supported versions").
VENV_MIN ?= .venv-min
MIN_CONSTRAINTS ?= ci/constraints-min.txt

.PHONY: install demo test test-min test-all benchmarks clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -e ".[testing]"

demo: install
	$(PYTHON) run_pretrain.py

test: install
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

# rebuilt when setup.cfg or the pins change; `make clean` removes it
$(VENV_MIN)/.installed: setup.cfg $(MIN_CONSTRAINTS)
	rm -rf $(VENV_MIN)
	$(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV_MIN)/bin/python -m pip install -q -e ".[testing]" -c $(MIN_CONSTRAINTS)
	touch $@

test-min: $(VENV_MIN)/.installed
	@$(VENV_MIN)/bin/python -c "from modeling_attg_mae._dependencies import SUPPORTED, installed_version; \
	print('minimum-versions run:', ', '.join(f'{n} {installed_version(n)}' for n in SUPPORTED))"
	$(VENV_MIN)/bin/python -m pytest tests $(PYTEST_ARGS)

test-all: test test-min

benchmarks: install
	for f in benchmarks/*.py; do $(PYTHON) $$f || exit 1; done

clean:
	rm -rf build dist *.egg-info .pytest_cache outputs runs $(VENV_MIN)
