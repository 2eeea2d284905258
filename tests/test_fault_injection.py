"""Fault injection: a real SIGKILL during training and during a checkpoint write, then a resume that must end
with the uninterrupted run's weights; a refused run into a used folder must not change a byte of it.

The kill is sent by the process to itself at a chosen point (inside the training step after step N, or after
the weights of checkpoint N are written but before its optimizer and trainer state), so the test is exact
rather than a race against the clock. Learning rate 2e-3: a weight lost on resume moves the result far beyond
the tolerance.
"""

import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from modeling_attg_mae.pretraining import parse_arguments, run
from tests.conftest import PRETRAIN_KILLER, REPO, assert_same_weights, subprocess_env, tiny_pretrain_args

COMMON = ("--max_steps", "6", "--save_steps", "2", "--learning_rate", "2e-3", "--warmup_steps", "0",
          "--eval_strategy", "no", "--num_pictures", "0", "--dataloader_num_workers", "0")

def _killed_run(tmp_path, where: str, step: int, name: str):
    command = [sys.executable, "-c", PRETRAIN_KILLER.format(repo=str(REPO)), where, str(step),
               *tiny_pretrain_args(tmp_path, *COMMON, name=name)]
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stdout[-2000:] + result.stderr[-2000:]


def _resume(tmp_path, name: str) -> str:
    command = [sys.executable, str(REPO / "run_pretrain.py"),
               *tiny_pretrain_args(tmp_path, *COMMON, "--resume_from_checkpoint", "last", name=name)]
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fault")
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *COMMON, name="full")))
    return tmp_path


def test_kill_during_training_then_resume_gives_the_uninterrupted_weights(uninterrupted):
    tmp_path = uninterrupted
    _killed_run(tmp_path, "train", 3, "killed-in-step")
    folder = tmp_path / "killed-in-step"
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (folder / "model.safetensors").exists()
    _resume(tmp_path, "killed-in-step")
    assert_same_weights(tmp_path / "full" / "model.safetensors", folder / "model.safetensors")
    initial = load_file(tmp_path / "full" / "checkpoint-2" / "model.safetensors")
    final = load_file(folder / "model.safetensors")
    assert max((final[n] - initial[n]).abs().max().item() for n in final) > 1e-3  # steps 3-6 moved the weights


def test_kill_during_a_checkpoint_write_then_resume_skips_the_broken_checkpoint(uninterrupted):
    tmp_path = uninterrupted
    _killed_run(tmp_path, "save", 4, "killed-in-save")
    folder = tmp_path / "killed-in-save"
    broken = folder / "checkpoint-4"
    assert (broken / "model.safetensors").exists() and not (broken / "trainer_state.json").exists()
    logs = _resume(tmp_path, "killed-in-save")
    assert "skipping" in logs and "checkpoint-4" in logs  # said, not silent
    assert_same_weights(tmp_path / "full" / "model.safetensors", folder / "model.safetensors")


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_run_into_a_used_folder_changes_nothing(uninterrupted, tmp_path):
    used = uninterrupted / "full"
    before = _snapshot(used)
    other = tmp_path / "other"
    run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "2", "--save_steps", "2", "--eval_strategy", "no",
                                   "--num_pictures", "0", name="other")))
    attempts = [
        (),  # a new run into the used folder
        ("--resume_from_checkpoint", str(other / "checkpoint-2")),  # another run's checkpoint into it
    ]
    for extra in attempts:
        args = tiny_pretrain_args(tmp_path, "--max_steps", "2", *extra)
        args[args.index("--output_dir") + 1] = str(used)
        with pytest.raises(ValueError, match="not empty|not a checkpoint of the run"):
            run(*parse_arguments(args))
    assert _snapshot(used) == before
