"""Fault injection for fine-tuning: a real SIGKILL of `run_fine_tune.py` in the middle of a seed (after one of its
checkpoints is written), then `--resume_from_checkpoint last`: the finished seed is reused, the interrupted one
continues, and both final models equal the uninterrupted run's tensor by tensor (`torch.equal`), with MAE's
whole recipe on (Mixup / CutMix, RandAugment, RandomErasing, drop path) and a learning rate at which a lost
optimizer state, RNG state or skipped batch would move the weights.

The kill is sent by the process to itself inside the training step after global step 3 of seed 1 (checkpoint-2
is on disk), so the test is exact rather than a race against the clock.
"""

import json
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.conftest import image_folders
from tests.conftest import REPO, subprocess_env

SEEDS = ("0", "1")
# Runs run_fine_tune.main(argv) and SIGKILLs the process in seed `seed`'s training step after global step `step`
KILLER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from modeling_attg_mae.fine_tuning.run import FineTuneTrainer
import run_fine_tune

seed, step, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
compute_loss = FineTuneTrainer.compute_loss
def killing_compute_loss(self, model, *args, **kwargs):
    if model.training and self.args.seed == seed and self.state.global_step == step:
        os.kill(os.getpid(), signal.SIGKILL)
    return compute_loss(self, model, *args, **kwargs)
FineTuneTrainer.compute_loss = killing_compute_loss
run_fine_tune.main(argv)
"""


def _argv(checkpoint, train_dir, validation_dir, output_dir, *extra):
    return ["--model_name_or_path", str(checkpoint), "--train_dir", str(train_dir), "--validation_dir",
            str(validation_dir), "--output_dir", str(output_dir), "--seeds", *SEEDS, "--max_steps", "4",
            "--save_steps", "2", "--learning_rate", "1e-2", "--warmup_steps", "1", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "8", "--logging_steps", "1", "--report_to", "none",
            "--dataloader_num_workers", "0", "--dataloader_pin_memory", "false", "--update_model_card", "false",
            "--disable_tqdm", "true", *extra]


def _run(command, tmp_path):
    return subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)


def test_kill_during_a_seed_then_resume_gives_the_uninterrupted_models(checkpoint, tmp_path):
    train_dir, validation_dir = image_folders(tmp_path / "data")
    full = _run([sys.executable, str(REPO / "run_fine_tune.py"),
                 *_argv(checkpoint, train_dir, validation_dir, tmp_path / "full")], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    killed = _run([sys.executable, "-c", KILLER.format(repo=str(REPO)), "1", "3",
                   *_argv(checkpoint, train_dir, validation_dir, killed_dir)], tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert (killed_dir / "seed-0" / "seed_results.json").is_file()  # seed 0 finished before the kill
    assert sorted(p.name for p in (killed_dir / "seed-1").glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (killed_dir / "seed-1" / "model.safetensors").exists()

    resumed = _run([sys.executable, str(REPO / "run_fine_tune.py"),
                    *_argv(checkpoint, train_dir, validation_dir, killed_dir, "--resume_from_checkpoint", "last")],
                   tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "seed 0 finished earlier" in resumed.stderr  # reused, not retrained
    for seed in SEEDS:
        expected = load_file(tmp_path / "full" / f"seed-{seed}" / "model.safetensors")
        actual = load_file(killed_dir / f"seed-{seed}" / "model.safetensors")
        assert expected.keys() == actual.keys()
        for name in expected:
            assert torch.equal(expected[name], actual[name]), (seed, name)
    start = load_file(tmp_path / "full" / "seed-1" / "checkpoint-2" / "model.safetensors")
    final = load_file(tmp_path / "full" / "seed-1" / "model.safetensors")
    assert max((final[n] - start[n]).abs().max().item() for n in final) > 1e-3  # steps 3-4 moved the weights
    rows = [json.loads((folder / "fine_tune_results.json").read_text())["results"] for folder in (tmp_path / "full", killed_dir)]
    assert rows[0] == rows[1]
