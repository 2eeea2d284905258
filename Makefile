# One entry point for set-up, demo and tests. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
# A plain `torch` requirement pulls a multi-GB CUDA build; preinstall a CPU build unless torch is already there.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-multiprocess benchmarks clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -e ".[testing]"

demo: install
	$(PYTHON) run_pretrain.py

test: install
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

benchmarks: install
	for f in benchmarks/*.py; do $(PYTHON) $$f || exit 1; done

clean:
	rm -rf build dist *.egg-info .pytest_cache outputs runs
