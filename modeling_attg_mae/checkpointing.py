"""Trainer checkpoints that resume without losing anything.

Two upstream traps are guarded here (transformers 5.24, see shared/REFERENCE.md):

* `save_pretrained` writes the legacy key names (`vit.encoder.layer.N.attention.attention.query...`) while the
  model holds the new ones (`vit.layers.N.attention.q_proj...`). `from_pretrained` converts them, but
  `Trainer._load_from_checkpoint` / `_load_best_model` call `load_state_dict(strict=False)` on the raw file: every
  transformer-layer weight silently keeps its fresh value on resume (upstream issues #43701 and #48805).
  `load_checkpoint_weights` goes through `from_pretrained`, the one loader that knows the conversion, and refuses
  any key left over.
* A run killed while writing a checkpoint leaves `checkpoint-N` under its final name with some files missing;
  `get_last_checkpoint` then picks it. The Trainer writes `trainer_state.json` last, so a checkpoint is complete
  when that file parses; `resolve_resume_checkpoint` skips incomplete ones with a warning.

And two of the package's own:

* A resume must continue *this* run: `RunFingerprintCallback` records the arguments that define the run in every
  checkpoint's `trainer_state.json` (written last, so a complete checkpoint has it), and `check_run_fingerprint`
  refuses a checkpoint written with other ones, naming them (an old run's `checkpoint-N` left in the folder would
  otherwise be taken by `last`: training "ends" at once and the old weights go out under the new run's card).
* `--overwrite_output_dir` replaces an earlier run, not a user's files: with a `RunOutputs` description of what a
  command writes, `check_output_dir` refuses a folder holding anything else, and `replace_earlier_run` removes the
  earlier run's outputs (checkpoints, exports, card, logs) before training, so that nothing stale survives.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .output_folders import CHECKPOINT_FOLDER, check_not_above_sources

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "trainer_state.json"  # written by the Trainer after weights, optimizer, scheduler and RNG states
# what `--resume_from_checkpoint` may say instead of a path: the newest complete checkpoint of output_dir
RESUME_LATEST = ("true", "last", "latest")


def load_checkpoint_weights(model: torch.nn.Module, checkpoint_dir: str | os.PathLike) -> None:
    """Copy the weights saved in `checkpoint_dir` into `model`, key names converted as `from_pretrained` does.

    Raises ValueError naming the folder when a weight of the model is missing from the file, the file has a
    weight the model lacks, or the file cannot be read (e.g. truncated by a kill).
    """
    checkpoint_dir = Path(checkpoint_dir)
    weights = checkpoint_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"checkpoint {checkpoint_dir} has no {WEIGHTS_FILE}")
    try:
        loaded, info = type(model).from_pretrained(checkpoint_dir, config=model.config, output_loading_info=True)
    except Exception as error:  # safetensors raises its own error type without the path
        raise ValueError(f"cannot read the weights {weights}: {error}") from error
    problems = {kind: info.get(kind) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {kind: sorted(map(str, keys)) for kind, keys in problems.items() if keys}
    if problems:
        raise ValueError(f"the weights in {weights} do not match the model: {problems}")
    result = model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded, result


class FullWeightsResumeMixin:
    """`Trainer` mixin: resume and best-model loading through `load_checkpoint_weights` (key names converted),
    instead of the stock raw `load_state_dict` that drops every layer weight; FSDP / DeepSpeed / sharded
    checkpoints keep the Trainer's own loaders. Put it before `Trainer` in the bases."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = self.model if model is None else model
        if self._loads_plain_checkpoint(resume_from_checkpoint, target):
            load_checkpoint_weights(target, resume_from_checkpoint)
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        best = self.state.best_model_checkpoint
        if self._loads_plain_checkpoint(best, self.model):
            logger.info("loading the best model from %s (score: %s)", best, self.state.best_metric)
            load_checkpoint_weights(self.model, best)
        else:
            super()._load_best_model()

    def _loads_plain_checkpoint(self, checkpoint, model) -> bool:
        from transformers import PreTrainedModel

        return (checkpoint is not None and isinstance(model, PreTrainedModel) and not self.is_fsdp_enabled
                and not self.is_deepspeed_enabled and (Path(checkpoint) / WEIGHTS_FILE).is_file())


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """True when the Trainer finished writing the checkpoint folder (its state file, written last, parses)."""
    path = Path(path)
    try:
        json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (path / WEIGHTS_FILE).is_file()


def resolve_resume_checkpoint(resume: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """The checkpoint folder to resume from, or None.

    `resume` is a folder, or True / "true" / "last" for the newest complete `checkpoint-N` in `output_dir`;
    incomplete ones (a kill during the write) are skipped with a warning. An explicit folder that is incomplete
    is an error naming what is missing.
    """
    if resume in (None, False, "", "false", "False"):
        return None
    if resume is True or str(resume).lower() in RESUME_LATEST:
        folder = Path(output_dir)
        steps = sorted(((int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else [])
                        if p.is_dir() and (m := CHECKPOINT_FOLDER.match(p.name))), reverse=True)
        for _, path in steps:
            if is_complete_checkpoint(path):
                return str(path)
            logger.warning("skipping %s: incomplete (no readable %s or %s; the run was probably killed while "
                           "writing it)", path, STATE_FILE, WEIGHTS_FILE)
        raise ValueError(f"--resume_from_checkpoint {resume}: no complete checkpoint-N folder in {folder}")
    path = Path(resume)
    if not path.is_dir():
        raise ValueError(f"--resume_from_checkpoint {path} does not exist or is not a folder")
    if not is_complete_checkpoint(path):
        missing = [name for name in (WEIGHTS_FILE, STATE_FILE) if not (path / name).is_file()]
        raise ValueError(f"--resume_from_checkpoint {path} is incomplete ({', '.join(missing) or STATE_FILE} "
                         "missing or unreadable: the run was probably killed while writing it); resume from an "
                         "earlier checkpoint, or pass --resume_from_checkpoint last for the newest complete one")
    return str(path)


def checkpoint_belongs_to(checkpoint: str | os.PathLike, output_dir: str | os.PathLike) -> bool:
    """True when `checkpoint` lies inside `output_dir`, i.e. resuming continues the run that folder holds."""
    checkpoint, output_dir = Path(checkpoint).resolve(), Path(output_dir).resolve()
    return output_dir in checkpoint.parents


# --------------------------------------------------------------------------- the run a checkpoint belongs to

class RunFingerprintCallback(TrainerCallback, ExportableState):
    """Puts `fingerprint` (the arguments that define the run, JSON-able) into every checkpoint's trainer_state.json,
    through the Trainer's stateful callbacks: it is written with the state file, the checkpoint's last file."""

    def __init__(self, fingerprint: dict):
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back (tuples as lists)

    def state(self) -> dict:
        return {"args": {"fingerprint": self.fingerprint}, "attributes": {}}


def read_run_fingerprint(checkpoint: str | os.PathLike) -> dict | None:
    """The fingerprint `RunFingerprintCallback` left in `checkpoint`, or None (a checkpoint of an older version)."""
    try:
        state = json.loads((Path(checkpoint) / STATE_FILE).read_text())
        return state["stateful_callbacks"][RunFingerprintCallback.__name__]["args"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_run_fingerprint(checkpoint: str | os.PathLike | None, fingerprint: dict) -> None:
    """Refuse to resume `checkpoint` when it was written by a run with other defining arguments; the message names
    each one with both values. A checkpoint without a fingerprint (written before they existed) is resumed with a
    warning. Keys only one side has are not compared (a field added by a later version)."""
    if not checkpoint:
        return
    recorded = read_run_fingerprint(checkpoint)
    if recorded is None:
        logger.warning("%s records no run fingerprint (written by an older version): cannot check that it is a "
                       "checkpoint of a run with these arguments", checkpoint)
        return
    current = json.loads(json.dumps(fingerprint))
    differing = [name for name in sorted(set(recorded) & set(current)) if recorded[name] != current[name]]
    if differing:
        listed = "; ".join(f"{name} {_shown(recorded[name])} there, {_shown(current[name])} here"
                           for name in differing)
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} is a checkpoint of a run with other arguments ({listed}): "
            "resuming it would continue that run, not this one. Resume with that run's arguments, or start this "
            "run afresh (--overwrite_output_dir replaces the earlier run's outputs, or choose another --output_dir)")


def _shown(value) -> str:
    return "unset" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


__all__ = ["load_checkpoint_weights", "FullWeightsResumeMixin", "is_complete_checkpoint", "resolve_resume_checkpoint",
           "checkpoint_belongs_to", "RESUME_LATEST", "RunFingerprintCallback", "read_run_fingerprint",
           "check_run_fingerprint", "RunOutputs", "check_output_dir", "replace_earlier_run", "mark_run_folder"]


# --------------------------------------------------------------------------- the output folder

_WRITE_PROBE = ".attg-mae-write-check-"
REPLACE, KEEP = "replace", "keep"


@dataclass(frozen=True)
class RunOutputs:
    """What a command writes into its output_dir, for `check_output_dir` and `replace_earlier_run`.

    `kind(entry)` says what an entry of the folder is: REPLACE (an earlier run's output, removed by
    `--overwrite_output_dir`), KEEP (the package's, left in place) or None (not the package's: refused).
    `collides(entry)` is True for an entry the run would write over (a resumed run refuses one that is not its
    own). `what` lists the outputs, for the messages.
    """

    kind: Callable[[Path], str | None]
    collides: Callable[[Path], bool]
    what: str
    # the file every run writes into its folder (`mark_run_folder`): names alone cannot tell a user's runs/,
    # pictures/ or model.safetensors from the package's, so a folder without it is not replaced
    marker: str | None = None


def _not_ours(path: Path, entries: list[Path], outputs: RunOutputs) -> list[Path]:
    """The entries `--overwrite_output_dir` may not remove: what `outputs.kind` does not know, and, in a folder
    without the run marker, everything but what the package keeps there (the study's log)."""
    if outputs.marker is not None and not (path / outputs.marker).is_file():
        return [p for p in entries if outputs.kind(p) != KEEP]
    return [p for p in entries if outputs.kind(p) is None]


def _not_ours_message(path: Path, foreign: list[Path], outputs: RunOutputs) -> str:
    why = f"--overwrite_output_dir replaces only an earlier run's outputs ({outputs.what}), never anything else"
    if outputs.marker is not None and not (path / outputs.marker).is_file():
        why += (f", and only in a folder its {outputs.marker} marks as a run's: names alone do not tell a user's "
                "runs/, pictures/ or model.safetensors from a run's (every run writes the marker; a run folder from "
                "before 2026-12-04 lacks it: delete such a folder yourself)")
    return _foreign_message(path, foreign, outputs, why + ".")


def mark_run_folder(output_dir, outputs: RunOutputs) -> None:
    """Write the run marker into `output_dir` (the main process, once the folder is this run's)."""
    if outputs.marker is not None:
        Path(output_dir, outputs.marker).write_text(json.dumps({"written_by": "attg-mae", "outputs": outputs.what},
                                                               indent=2) + "\n")


def _entries(path: Path) -> list[Path]:
    # another process of this run may be probing the folder right now: its probe file is not an earlier run
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if not p.name.startswith(_WRITE_PROBE))


def _replaces_earlier_run(training_args, run_args) -> bool:
    """`--overwrite_output_dir` without resuming a checkpoint inside the folder (that continues the run it holds)."""
    resume = training_args.resume_from_checkpoint
    if not run_args.overwrite_output_dir:
        return False
    if not resume:
        return True
    return str(resume).lower() not in RESUME_LATEST and not checkpoint_belongs_to(resume, training_args.output_dir)


def _foreign_message(path: Path, foreign: list[Path], outputs: RunOutputs, why: str) -> str:
    names = ", ".join(f"{p.name}/" if p.is_dir() else p.name for p in foreign[:8])
    names += f" and {len(foreign) - 8} more" if len(foreign) > 8 else ""
    clash = [p.name for p in foreign if outputs.collides(p)]
    clash_text = f" (the run writes its own {', '.join(clash)} there)" if clash else ""
    return (f"output_dir {path} holds {names}, which this package did not write{clash_text}. {why} Move "
            f"{'them' if len(foreign) > 1 else 'it'} out of {path}, or choose another --output_dir")


def check_output_dir(training_args, run_args, outputs: RunOutputs | None = None, sources=()) -> None:
    """Refuse to write into a non-empty `training_args.output_dir` unless asked to (`run_args.overwrite_output_dir`),
    or unless resuming a checkpoint of the run it holds; fail now, not after data and maps, when it cannot be
    written. Shared by pre-training and fine-tuning (both resume through the Trainer).

    With `outputs` (what the command writes), also: `--overwrite_output_dir` is refused for a folder holding
    anything the package did not write (it replaces only an earlier run's outputs, see `replace_earlier_run`), and
    a resumed run for a folder where something not the package's stands where the run writes (a user's encoder/).
    """
    path = Path(training_args.output_dir)
    # the run's own inputs (images, the start checkpoint) may not lie in the folder it writes and may replace
    check_not_above_sources(path, sources)
    resume = training_args.resume_from_checkpoint
    entries = _entries(path)
    used = bool(entries)
    if used and not run_args.overwrite_output_dir:
        if not resume:
            raise ValueError(
                f"output_dir {path} exists and is not empty: pass --overwrite_output_dir to write into it, "
                "--resume_from_checkpoint to continue a run, or choose another --output_dir"
            )
        if str(resume).lower() not in RESUME_LATEST and not checkpoint_belongs_to(resume, path):
            raise ValueError(
                f"--resume_from_checkpoint {resume} is not a checkpoint of the run in output_dir {path}, which is "
                "not empty: continuing there would overwrite that run's model, card and state. Choose an empty "
                "--output_dir (or the checkpoint's own run folder), or pass --overwrite_output_dir to replace it"
            )
    if used and outputs is not None:
        foreign = [p for p in entries if outputs.kind(p) is None]
        if _replaces_earlier_run(training_args, run_args):
            not_ours = _not_ours(path, entries, outputs)
            if not_ours:
                raise ValueError(_not_ours_message(path, not_ours, outputs))
        elif any(outputs.collides(p) for p in foreign):
            raise ValueError(_foreign_message(
                path, [p for p in foreign if outputs.collides(p)], outputs,
                "The resumed run would fail on it at its end, after training."))
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=_WRITE_PROBE):
            pass
    except OSError as error:
        raise ValueError(f"output_dir {path} cannot be written ({error})") from None


def replace_earlier_run(training_args, run_args, outputs: RunOutputs) -> list[str]:
    """With `--overwrite_output_dir` (and no resume of a checkpoint inside the folder), remove the earlier run's
    outputs from `output_dir` (the entries `outputs.kind` calls REPLACE) so that none survives into the new run: no
    stale checkpoint for `--resume_from_checkpoint last`, no stale export for `--push_to_hub`. Call it on the main
    process only, after every check, just before training. Returns the names removed."""
    if not _replaces_earlier_run(training_args, run_args):
        return []
    path = Path(training_args.output_dir)
    entries = _entries(path)
    foreign = _not_ours(path, entries, outputs)
    if foreign:  # appeared since check_output_dir: still not ours to remove
        raise ValueError(_not_ours_message(path, foreign, outputs))
    removed = []
    # checkpoints first: a kill half-way leaves no old checkpoint for `last` (the fingerprint would refuse it too)
    replaced = [p for p in entries if outputs.kind(p) == REPLACE]
    for entry in sorted(replaced, key=lambda p: not CHECKPOINT_FOLDER.match(p.name)):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    if removed:
        logger.info("--overwrite_output_dir: removed the earlier run's %s from %s", ", ".join(removed), path)
    return removed
