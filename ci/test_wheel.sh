#!/usr/bin/env bash
# The package as a wheel user gets it (`make test-wheel`, run by .ci/run): build the wheel, install it with its
# dependencies into a fresh venv outside the checkout, import every module, run each command's --help and a 2-step
# pre-training there. An editable install (what `make test` uses) cannot see a sub-package the wheel leaves out.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
work=$(mktemp -d "${TMPDIR:-/tmp}/attg-mae-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT

# built from a copy of the tracked files: an in-tree build reuses build/lib, so a module deleted or renamed since the
# last build (or an untracked file) would still ship and still import
mkdir "$work/src"
git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 tar -cf - --) | tar -xf - -C "$work/src"
"$PYTHON" -m pip wheel -q --no-deps -w "$work/dist" "$work/src"
"$PYTHON" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q "$TORCH_SPEC"              # the CPU build first: a plain `torch` requirement is a CUDA one
"$py" -m pip install -q "$work"/dist/attg_mae-*.whl

cd "$work"                                          # nothing of the checkout on sys.path
"$py" - <<'PY'
import importlib
import pkgutil

import modeling_attg_mae

assert "site-packages" in modeling_attg_mae.__file__, modeling_attg_mae.__file__
names = [info.name for info in pkgutil.walk_packages(modeling_attg_mae.__path__, "modeling_attg_mae.")
         if not info.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
from modeling_attg_mae import AttGTrainer  # noqa: F401 (lazy export from pretraining/)
from modeling_attg_mae.package_files import packaged_path

assert packaged_path("model_cards", "attg_mae.md").is_file() and packaged_path("metrics", "top_k_accuracy").is_dir()
print(f"wheel: imported {len(names)} modules from {modeling_attg_mae.__path__[0]}")
PY
for command in pretrain knn linear-probe retrieval fine-tune maps export; do
  "$work/venv/bin/attg-mae-$command" --help > /dev/null
done
tiny=hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,image_size=32,patch_size=8
tiny=$tiny,decoder_hidden_size=32,decoder_num_hidden_layers=1,decoder_num_attention_heads=2,decoder_intermediate_size=64
"$work/venv/bin/attg-mae-pretrain" --output_dir "$work/run" --config_overrides "$tiny" --max_steps 2 \
  --synthetic_num_train 32 --synthetic_num_validation 16 --synthetic_image_size 32 --attention_grid_size 8 \
  --per_device_train_batch_size 8 --num_pictures 0 --report_to none > "$work/pretrain.log" 2>&1 \
  || { tail -n 30 "$work/pretrain.log"; exit 1; }
test -f "$work/run/model.safetensors" && test -f "$work/run/encoder/model.safetensors"
grep -q '"global_step": 2' "$work/run/trainer_state.json"
echo "wheel: attg-mae-pretrain ran 2 steps from the installed wheel ($work/run)"
# an evaluation too: it needs the metric module and the card template shipped inside the package
"$work/venv/bin/attg-mae-knn" --model_name_or_path "$work/run" --ks 1 --output_dir "$work/knn" --progress false \
  > "$work/knn.log" 2>&1 || { tail -n 30 "$work/knn.log"; exit 1; }
grep -q '"top1"' "$work/knn/knn_results.json" && grep -qi "k-NN" "$work/run/README.md"
echo "wheel: attg-mae-knn evaluated it and wrote its results into the card"
