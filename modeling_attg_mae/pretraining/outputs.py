"""What a pre-training run writes into its `--output_dir`, for the one output-folder guard
(`checkpointing.check_output_dir` / `replace_earlier_run`).

`--overwrite_output_dir` replaces an earlier run: every entry listed here is removed before the new run trains (a
stale `checkpoint-N` would be taken by `--resume_from_checkpoint last`, a stale `encoder-timm/` pushed with
`--push_to_hub`), and a folder holding anything else is refused, since it is not the package's to delete. Names
alone cannot tell a user's runs/, pictures/ or model.safetensors from a run's, so only a folder that holds the run
marker (`RUN_MARKER`, written by every run) is replaced at all; within it, the card (README.md) is recognised by the
attg-mae tag of its front matter, config.json by its model type, an export folder by `export_format_of`, the card's
`.eval_results/` by the first line of each file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..checkpointing import KEEP, REPLACE, RunOutputs
from ..hub import EVAL_RESULTS_FOLDER, is_own_eval_results_file
from ..output_folders import CHECKPOINT_FOLDER, export_format_of

# written by every run into its folder (checkpointing.mark_run_folder): the sign that --overwrite_output_dir may
# replace the folder's entries of the names below
RUN_MARKER = "attg_mae_run.json"

# files of the run folder: the stock-loadable export, the Trainer's state, the data record, the k-NN after training
# (and the results of the evaluations, should they be pointed at the run folder), the embedding plot
_FILES = {"model.safetensors", "preprocessor_config.json", "trainer_state.json", "training_args.bin",
          "attg_mae_data.json", "embedding.png", "embedding_tsne.json", RUN_MARKER}
_RESULTS = re.compile(r"^[a-z_]+_results\.json$")  # knn_results.json, linear_probe_results.json, ...
# folders (besides the Trainer's checkpoint-N): TensorBoard logs, pictures, the k-NN's feature cache, the export's staging folders
_FOLDERS = {"runs", "pictures", "feature_cache"}
_STAGING = re.compile(r"^\.(encoder|encoder-timm)\.(tmp|old)-")
# benchmarks/attg_vs_mae.py opens <output_dir>/train.log before it starts this run: removing it would lose the log
_KEPT = {"train.log"}
# what the run writes itself, at the end: a foreign entry of that name stops it after training
_WRITES = {"encoder", "README.md", "config.json", "model.safetensors", "preprocessor_config.json",
           "attg_mae_data.json", "trainer_state.json"}


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _is_evaluation_output(folder: Path) -> bool:
    """A folder of evaluation results only (the study's eval-<name>/ folders)."""
    files = [p for p in folder.rglob("*") if not p.is_dir()]
    return bool(files) and all(_RESULTS.match(p.name) or p.name in ("embedding.png", "embedding_tsne.json")
                               for p in files)


def output_kind(entry: Path) -> str | None:
    """REPLACE for an earlier pre-training run's output, KEEP for the study's log, None for anything else."""
    name = entry.name
    if name in _KEPT and entry.is_file():
        return KEEP
    if entry.is_dir():
        if name == EVAL_RESULTS_FOLDER:  # the card's results (hub.write_eval_results): ours only if every file is
            files = list(entry.iterdir())
            return REPLACE if files and all(is_own_eval_results_file(p) for p in files) else None
        if (CHECKPOINT_FOLDER.match(name) or name in _FOLDERS or _STAGING.match(name) or export_format_of(entry)
                or _is_evaluation_output(entry)):
            return REPLACE
        return None
    if name in _FILES or _RESULTS.match(name):
        return REPLACE
    if name == "README.md":  # the model card: hub.render_model_card tags it attg-mae in its YAML front matter
        text = _text(entry)
        front = text.split("---", 2)[1] if text.startswith("---") and text.count("---") >= 2 else ""
        return REPLACE if re.search(r"^\s*-\s*attg-mae\s*$", front, re.M) else None
    if name == "config.json":
        try:
            return REPLACE if json.loads(_text(entry)).get("model_type") == "vit_mae" else None
        except (ValueError, AttributeError):
            return None
    return None


def collides(entry: Path) -> bool:
    return entry.name in _WRITES


PRETRAINING_OUTPUTS = RunOutputs(
    kind=output_kind, collides=collides, marker=RUN_MARKER,
    what="checkpoint-N, the exported model and its encoder/ and encoder-timm/ exports, the card, runs/ logs, "
         "pictures/, feature_cache/ and results")
