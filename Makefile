# One entry point for set-up, demo and tests. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
# A plain `torch` requirement pulls a multi-GB CUDA build; preinstall a CPU build unless torch is already there.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# The minimum-versions environment: a separate venv with the oldest supported release of each dependency
# (ci/constraints-min.txt, setup.cfg's lower bounds) and the CPU torch of TORCH_SPEC (README, "Supported versions").
VENV_MIN ?= .venv-min
MIN_CONSTRAINTS ?= ci/constraints-min.txt

.PHONY: install demo test test-min test-wheel test-all test-multiprocess benchmarks campaign study study-label-free \
	study-fine-tune study-object-hue app-screenshot clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -e ".[testing]"

demo: install
	$(PYTHON) run_pretrain.py

# docs/app.png, the README's picture of the demo app: a tiny random checkpoint (tests/conftest.py), no download;
# needs the [app] extra and Debian's chromium + chromium-driver
APP_CHECKPOINT ?= /tmp/attg-mae-app-checkpoint
app-screenshot:
	$(PYTHON) -c "from tests.conftest import save_tiny_checkpoint; save_tiny_checkpoint('$(APP_CHECKPOINT)')"
	HF_HUB_OFFLINE=1 $(PYTHON) app.py --checkpoint $(APP_CHECKPOINT) --screenshot docs/app.png

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

# the wheel in a fresh venv outside the checkout: every module imports, every command's --help, a 2-step pre-training
test-wheel:
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash ci/test_wheel.sh

test-all: test test-min test-wheel

# speed and cost benchmarks (each prints ratios against its baseline, run side by side)
BENCHMARKS = overhead pretrain_throughput knn attention_maps knn_monitor_overhead linear_probe_sweep retrieval \
	fine_tune_throughput

benchmarks: install
	for f in $(BENCHMARKS); do $(PYTHON) benchmarks/$$f.py || exit 1; done

# the first command on a lent GPU (issue 24): step overhead, maps, loader, online maps and the pilot in about 8
# minutes -> docs/results/accelerator/<date>.json (docs/RESULTS.md, section 7); CAMPAIGN_ARGS=--smoke checks it on a
# CPU. No install step: the lent machine has no network, and the script runs from the checkout
CAMPAIGN_ARGS ?=
campaign:
	$(PYTHON) benchmarks/accelerator_campaign.py $(CAMPAIGN_ARGS)

# the method study (issue 10): MAE vs AttG through run_pretrain.py, 5 paired seeds per setting, then the tables
# and plots of docs/RESULTS.md regenerated from the committed records (about an hour per setting on 2 CPU cores)
study: install
	$(PYTHON) benchmarks/attg_vs_mae.py --setting main
	$(PYTHON) benchmarks/attg_vs_mae.py --setting shape -- --synthetic_object_color random
	$(PYTHON) benchmarks/study_report.py --write

# label-free guidance (issue 11): MAE vs self-bootstrapped, online and stored spectral-residual maps, 5 paired seeds,
# docs/results/label_free/PROTOCOL.md; the oracle arm is paired from the replication of issue 14 when MAE reproduces
study-label-free: install
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/attg_vs_mae.py --setting main --records docs/results/label_free \
		--work outputs/label_free --arms none self online_sr sr
	$(PYTHON) benchmarks/study_report.py --records docs/results/label_free --block label_free \
		--reference docs/results/eval_breadth/checkpoint_records attg --write

# the study setting that can decide (issue 25): the object's hue is the class, silhouettes and vivid backgrounds
# keep it out of every training-free statistic; MAE, AttG with the masks, two placebos and spectral residual,
# paired by seed, under docs/results/object_hue/PROTOCOL.md (about 4 minutes per run on one core; runs in parts:
# records are per run and a rerun skips what exists)
OBJECT_HUE = --records docs/results/object_hue --work outputs/object_hue --arms none attg permuted centre sr \
	-- --synthetic_class_cue hue --synthetic_background_palette vivid
study-object-hue: install
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/attg_vs_mae.py --setting hue_pilot --seeds 0 1 2 $(OBJECT_HUE)
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/attg_vs_mae.py --setting object_hue --seeds $(shell $(PYTHON) -c \
		"import json; print(*json.load(open('docs/results/object_hue/object_hue/protocol.json'))['seeds'])") \
		$(OBJECT_HUE)
	$(PYTHON) benchmarks/study_report.py --records docs/results/object_hue --block object_hue --write

# low-shot fine-tuning (issue 13) of the method study's checkpoints in outputs/study (make study first),
# docs/results/fine_tune/PROTOCOL.md
study-fine-tune: install
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/fine_tune_study.py run --work outputs/study
	$(PYTHON) benchmarks/fine_tune_study.py report --write

clean:
	rm -rf build dist *.egg-info .pytest_cache outputs runs $(VENV_MIN)
