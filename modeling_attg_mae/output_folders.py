"""The folders the package writes, and how it tells them from a user's: the one place that recognises an encoder
export (`export_format_of`), finds the run folder a checkpoint belongs to (`run_folder_of`), and guards a command that
replaces its output folder whole (`check_output_folder`). It imports nothing from the package, so that data/,
object_discovery/, export and the Hub code can all ask it without importing each other.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

CONFIG_FILE = "config.json"
# the Trainer's checkpoint folders, `checkpoint-<global step>`
CHECKPOINT_FOLDER = re.compile(r"^checkpoint-(\d+)$")


def export_format_of(folder) -> str | None:
    """"hf" or "timm" when `folder` holds an export this module wrote, else None.

    Not any ViT or timm folder: a fine-tuned `ViTForImageClassification`, a DINO `ViTModel` or a downloaded timm
    model also have `model_type: vit` / `architecture`, and `--overwrite_output_dir` must never delete those. An "hf"
    export is the only `ViTModel` with the identity pooler (`pooler_act: linear`, see `vit_config_from`); a timm
    export carries the "attg_mae" key of `timm_config`.
    """
    try:
        config = json.loads((Path(folder) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    if (config.get("model_type") == "vit" and config.get("architectures") == ["ViTModel"]
            and config.get("pooler_act") == "linear"):
        return "hf"
    if "architecture" in config and isinstance(config.get("attg_mae"), dict):
        return "timm"
    return None


def check_not_above_sources(output_dir, sources, hint: str = "") -> None:
    """Refuse an `--output_dir` that is one of the command's local inputs or a folder above one: replacing it, or
    writing a run into it, could destroy the images or the checkpoint the command reads. `sources`: `(description,
    path)` pairs, e.g. `("--train_dir", "photos/")`; None and paths that do not exist (Hub ids) are skipped."""
    output_dir = Path(os.path.expanduser(os.fspath(output_dir)))
    target = output_dir.resolve()
    for description, source in sources:
        if source is None:
            continue
        source = Path(os.path.expanduser(os.fspath(source)))
        if source.exists() and (target == source.resolve() or target in source.resolve().parents):
            raise ValueError(f"--output_dir {output_dir} is {description} {source} or a folder above it: "
                             f"the output would replace its source{hint}")


def check_output_folder(output_dir, overwrite: bool, previous_output, what: str, sources=(), hint: str = "",
                        ) -> Path:
    """Refuse, before any work, an `--output_dir` whose replacement would destroy something this package did not
    write: the one "folder holds only our earlier output" guard of the commands that replace their output folder
    whole (the encoder export, the maps CLI).

    It may not be a source (`sources`: `(description, path)` pairs, e.g. `("--train_dir", "photos/")`) or a folder
    above one; an existing non-empty folder needs `overwrite`, and even then is replaced only when
    `previous_output(folder)` returns None (an earlier output of the command; else it returns why not, named in
    the error). `what` names that output in the error ("an encoder export"); `hint` is appended to the source error.
    """
    output_dir = Path(os.path.expanduser(os.fspath(output_dir)))
    check_not_above_sources(output_dir, sources, hint)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file, not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise ValueError(f"--output_dir {output_dir} already exists and is not empty; pass --overwrite_output_dir "
                             "to replace it, or choose another --output_dir")
        why = previous_output(output_dir)
        if why is not None:
            raise ValueError(f"--output_dir {output_dir} holds something other than {what} ({why}); not replacing "
                             "it even with --overwrite_output_dir")
    return output_dir


def run_folder_of(checkpoint) -> Path | None:
    """The run folder a local checkpoint folder is part of, or None: the parent of a Trainer `checkpoint-N` (it has
    the Trainer's trainer_state.json) or of an encoder export (`export_format_of`). The run writes what they
    lack next to them: its data record and (at its end) its image processor."""
    folder = Path(os.path.expanduser(os.fspath(checkpoint)))
    if not folder.is_dir():
        return None
    trainer_checkpoint = CHECKPOINT_FOLDER.match(folder.name) and (folder / "trainer_state.json").is_file()
    if trainer_checkpoint or export_format_of(folder) is not None:
        return folder.resolve().parent
    return None


__all__ = ["CONFIG_FILE", "CHECKPOINT_FOLDER", "export_format_of", "run_folder_of", "check_not_above_sources", "check_output_folder"]
