# One entry point for set-up, demo and tests. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
# A plain `torch` requirement pulls a multi-GB CUDA build; preinstall a CPU build unless torch is already there.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-multiprocess benchmarks study clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -e ".[testing]"

demo: install
	$(PYTHON) run_pretrain.py

test: install
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

# speed and cost benchmarks (each prints ratios against its baseline, run side by side)
BENCHMARKS = overhead pretrain_throughput knn attention_maps knn_monitor_overhead linear_probe_sweep

benchmarks: install
	for f in $(BENCHMARKS); do $(PYTHON) benchmarks/$$f.py || exit 1; done

# the method study (issue 10): MAE vs AttG through run_pretrain.py, 5 paired seeds per setting, then the tables
# and plots of docs/RESULTS.md regenerated from the committed records (about an hour per setting on 2 CPU cores)
study: install
	$(PYTHON) benchmarks/attg_vs_mae.py --setting main
	$(PYTHON) benchmarks/attg_vs_mae.py --setting shape -- --synthetic_object_color random
	$(PYTHON) benchmarks/study_report.py --write

clean:
	rm -rf build dist *.egg-info .pytest_cache outputs runs
