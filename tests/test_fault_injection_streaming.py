"""Fault injection on a streamed training split: a real SIGKILL in the second pass over a stream shorter than the
run, then `--resume_from_checkpoint last`, must end with the uninterrupted run's weights and losses.

The stream: a Hub-layout parquet folder of 20 rows, batches of 8, 7 steps (2.8 passes; a batch holds the end of
one pass and the start of the next). Checkpoint-4 lies in the second pass (rows 4-11 of it were the last trained)
and the kill comes in step 5. The Trainer takes a stream's epoch to be max_steps long: it used to resume by
skipping 4 batches of a *first* pass (which has 3) and replaying the second pass from its start. Learning rate
2e-3: one wrong batch moves the weights far beyond the tolerance.
"""

import json
import shutil
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from modeling_attg_mae.pretraining import parse_arguments, run
from tests.conftest import tiny_pretrain_args
from tests.conftest import PRETRAIN_KILLER, REPO, assert_same_weights, subprocess_env

STREAM = ("--streaming", "--attention_online", "--attention_method", "spectral_residual", "--max_steps", "7",
          "--save_steps", "2", "--learning_rate", "2e-3", "--warmup_steps", "0", "--eval_strategy", "no",
          "--num_pictures", "0", "--streaming_shuffle_buffer", "8")


def _flags(tmp_path, name, *extra):
    return tiny_pretrain_args(tmp_path, "--dataset_name", str(tmp_path / "hub"), *STREAM, *extra, name=name,
                              synthetic=False)


def _losses(folder) -> dict:
    state = json.loads((folder / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def _subprocess(command, tmp_path, expected_rc):
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == expected_rc, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def stream_folder(tmp_path_factory):
    """A folder with the Hub layout of a dataset repo (data/<split>-*.parquet) holding 20 train rows."""
    from modeling_attg_mae.data import load_synthetic_dataset

    tmp_path = tmp_path_factory.mktemp("stream")
    source = load_synthetic_dataset(num_train=20, num_validation=8, image_size=32, cache_dir=str(tmp_path / "c"))
    (tmp_path / "hub" / "data").mkdir(parents=True)
    for split in ("train", "validation"):
        source[split].select_columns(["image", "label"]).to_parquet(
            str(tmp_path / "hub" / "data" / f"{split}-00000-of-00001.parquet"))
    return tmp_path


# 0: on resume the rows are dropped undecoded (AttGTrainer.get_resumed_dataloader); 1: the Trainer's own skip.
# Each has its own uninterrupted run: datasets shuffles a stream read in a DataLoader worker in another order.
@pytest.mark.parametrize("workers", ["0", "1"])
def test_kill_in_the_second_pass_of_a_stream_then_resume_gives_the_uninterrupted_run(stream_folder, workers):
    tmp_path, name = stream_folder, f"killed-{workers}"
    run(*parse_arguments(_flags(tmp_path, f"full-{workers}", "--dataloader_num_workers", workers)))
    flags = _flags(tmp_path, name, "--dataloader_num_workers", workers)
    _subprocess([sys.executable, "-c", PRETRAIN_KILLER.format(repo=str(REPO)), "train", "4", *flags], tmp_path, -signal.SIGKILL)
    folder = tmp_path / name
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (folder / "model.safetensors").exists()
    _subprocess([sys.executable, str(REPO / "run_pretrain.py"), *flags, "--resume_from_checkpoint", "last"],
                tmp_path, 0)
    full, resumed = _losses(tmp_path / f"full-{workers}"), _losses(folder)
    assert sorted(full) == sorted(resumed) == list(range(1, 8))
    # from the first resumed step on (a wrong batch moves the loss by ~1e-2; rounding moves it by < 1e-6)
    assert [resumed[step] for step in (5, 6, 7)] == pytest.approx([full[step] for step in (5, 6, 7)], rel=1e-5)
    assert_same_weights(tmp_path / f"full-{workers}" / "model.safetensors", folder / "model.safetensors")
    initial = load_file(folder / "checkpoint-4" / "model.safetensors")
    final = load_file(folder / "model.safetensors")
    assert max((final[n] - initial[n]).abs().max().item() for n in final) > 1e-3  # steps 5-7 moved the weights
    shutil.rmtree(folder)
