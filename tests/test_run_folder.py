"""A run folder holds one run: `--overwrite_output_dir` replaces the earlier run's outputs (and nothing else), a
resume continues only a checkpoint of this run's arguments, and what lies inside a run folder (`checkpoint-N`, the
`encoder/` export) is evaluated with the run's normalisation and on the run's data.

Real runs of `run_pretrain.py` (tiny model, 48 synthetic images), a real SIGKILL, the k-NN CLI on the results.
"""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import ViTImageProcessor

import run_knn
from modeling_attg_mae.pretraining import parse_arguments, run
from tests.conftest import (
    PRETRAIN_KILLER,
    REPO,
    TINY_PRETRAIN_CONFIG,
    save_tiny_checkpoint,
    subprocess_env,
    tiny_pretrain_args,
)

# lr 2e-3: runs that differ in anything visibly end with other weights
COMMON = ("--save_steps", "2", "--warmup_steps", "0", "--eval_strategy", "no", "--num_pictures", "0",
          "--dataloader_num_workers", "0", "--attg_guidance", "none")



def _assert_same_weights(expected: Path, actual: Path):
    a, b = load_file(expected), load_file(actual)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), name


def test_overwrite_then_kill_then_resume_last_continues_the_new_run_not_the_old_one(tmp_path):
    # the old run: 6 steps at lr 2e-3, checkpoints 2, 4, 6
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *COMMON, "--max_steps", "6", "--learning_rate", "2e-3",
                                            name="run")))
    folder = tmp_path / "run"
    assert (folder / "checkpoint-6").is_dir()
    # the new run (4 steps at lr 1e-3) as it would end uninterrupted
    new = (*COMMON, "--max_steps", "4", "--learning_rate", "1e-3")
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *new, name="reference")))
    # ... over the old one's folder, killed in step 3 (after its checkpoint-2), then resumed with `last`
    killed = subprocess.run([sys.executable, "-c", PRETRAIN_KILLER.format(repo=str(REPO)), "train", "3",
                             *tiny_pretrain_args(tmp_path, *new, "--overwrite_output_dir", name="run")],
                            cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    left = sorted(p.name for p in folder.iterdir())
    resumed = subprocess.run([sys.executable, str(REPO / "run_pretrain.py"),
                              *tiny_pretrain_args(tmp_path, *new, "--overwrite_output_dir", "--resume_from_checkpoint",
                                                  "last", name="run")],
                             cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 4
    _assert_same_weights(tmp_path / "reference" / "model.safetensors", folder / "model.safetensors")
    # the overwrite had removed every output of the old run: its checkpoint-4 and -6 were not there to be taken
    assert left == ["attg_mae_run.json", "checkpoint-2", "runs"]  # the marker: written before training
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_a_checkpoint_of_a_run_with_other_arguments_is_not_resumed(tmp_path):
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *COMMON, "--max_steps", "4", "--learning_rate", "2e-3",
                                            name="old")))
    # an explicit checkpoint into a new folder, with another learning rate and length: refused, both named
    with pytest.raises(ValueError, match=r"other arguments \(learning_rate 0.002 there, 0.001 here; max_steps 4 "
                                         r"there, 6 here\)"):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, *COMMON, "--max_steps", "6", "--learning_rate", "1e-3",
                                                "--resume_from_checkpoint", str(tmp_path / "old" / "checkpoint-2"),
                                                name="new")))
    # and `last` in the run's own folder, with another seed
    with pytest.raises(ValueError, match="seed 3 there, 4 here"):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, *COMMON, "--max_steps", "4", "--learning_rate", "2e-3",
                                                "--seed", "4", "--resume_from_checkpoint", "last", name="old")))
    # the same arguments resume (here: the finished run, nothing left to train)
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *COMMON, "--max_steps", "4", "--learning_rate", "2e-3",
                                            "--resume_from_checkpoint", "last", name="old")))


def test_an_overwriting_run_leaves_no_stale_export_and_pushes_none(tmp_path, monkeypatch):
    import transformers

    import modeling_attg_mae.hub as hub
    from modeling_attg_mae.export import export_encoder

    run(*parse_arguments(tiny_pretrain_args(tmp_path, *COMMON, "--max_steps", "2", name="run")))
    folder = tmp_path / "run"
    export_encoder(folder, format="timm")  # the old run's timm export: <run>/encoder-timm
    assert (folder / "encoder-timm" / "model.safetensors").is_file()
    # the Hub, stood in for: no repo is created, and every upload is recorded
    uploads = []
    monkeypatch.setattr(hub, "_upload", lambda folder, repo_id, private, message, ignore_patterns=None:
                        uploads.append((folder.name, repo_id, ignore_patterns)) or f"https://hf.co/{repo_id}")
    monkeypatch.setattr(transformers.Trainer, "init_hf_repo", lambda self, token=None: None)
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *COMMON, "--max_steps", "3", "--save_strategy", "no",
                                            "--overwrite_output_dir", "--push_to_hub", "--hub_model_id", "you/run",
                                            name="run")))
    assert not (folder / "encoder-timm").exists() and not list(folder.glob("checkpoint-*"))
    assert uploads == [("run", "you/run", ["encoder/*"]), ("encoder", "you/run-encoder", None)]


def test_overwrite_replaces_only_what_the_package_wrote(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "README.md").write_text("# my own readme, not a model card\n")
    with pytest.raises(ValueError, match=r"holds README.md, notes.txt, which this package did not write"):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, *COMMON, "--max_steps", "1", "--overwrite_output_dir")))
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "README.md").read_text().startswith("# my own")


# ------------------------------------------------------------------------------------------- inside a run folder

MEAN, STD = [0.3, 0.6, 0.1], [0.5, 0.1, 0.3]  # far from ImageNet's: features of the same weights differ with them


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run continued from a checkpoint whose processor has its own mean/std (so the run's has them too)."""
    tmp_path = tmp_path_factory.mktemp("inside")
    base = save_tiny_checkpoint(tmp_path / "base", seed=1, **{k: v for k, v in TINY_PRETRAIN_CONFIG.items()})
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD).save_pretrained(base)
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *COMMON, "--max_steps", "2", "--model_name_or_path", str(base),
                                            "--learning_rate", "2e-3", name="run")))
    return tmp_path


def _knn(tmp_path, model, name):
    return run_knn.main(["--model_name_or_path", str(model), "--ks", "5", "--output_dir", str(tmp_path / name),
                         "--feature_cache_dir", str(tmp_path / f"cache-{name}"), "--update_model_card", "false",
                         "--progress", "false"])


def test_a_checkpoint_is_evaluated_with_its_runs_normalisation_and_data(trained, tmp_path):
    from modeling_attg_mae.model_source import load_encoder

    folder = trained / "run"
    legacy = tmp_path / "legacy"  # a run of an older version: its checkpoints hold no image processor
    shutil.copytree(folder, legacy)
    (legacy / "checkpoint-2" / "preprocessor_config.json").unlink(missing_ok=True)
    expected = _knn(tmp_path, folder, "run")
    for checkpoint in (folder / "checkpoint-2", legacy / "checkpoint-2"):
        _, info = load_encoder(str(checkpoint))
        assert list(info.image_mean) == pytest.approx(MEAN) and list(info.image_std) == pytest.approx(STD)
        got = _knn(tmp_path, checkpoint, checkpoint.parent.name)
        assert got["dataset"] == expected["dataset"]  # the run's 32 px data, not the 64 px synthetic default
        assert got["results"] == expected["results"]  # the same weights, the same features: the same k-NN
    # the encoder export of a checkpoint reads the same processor (one home: model_source.processor_source)
    from modeling_attg_mae.export import export_encoder

    exported = export_encoder(legacy / "checkpoint-2", output_dir=tmp_path / "exported")
    assert json.loads((exported / "preprocessor_config.json").read_text())["image_mean"] == pytest.approx(MEAN)


def test_a_checkpoint_whose_normalisation_is_unknown_is_refused(trained, tmp_path):
    from modeling_attg_mae.model_source import load_encoder

    killed = tmp_path / "killed"  # a run killed before its end: no processor next to its checkpoint either
    shutil.copytree(trained / "run" / "checkpoint-2", killed / "checkpoint-2")
    (killed / "checkpoint-2" / "preprocessor_config.json").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="without preprocessor_config.json, and its run folder .* has none either"):
        load_encoder(str(killed / "checkpoint-2"))
    from modeling_attg_mae.export import export_encoder

    with pytest.raises(ValueError, match="has none either.*or pass --image_processor"):
        export_encoder(killed / "checkpoint-2", output_dir=tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


def test_the_encoder_export_is_evaluated_on_its_runs_data_without_a_load_report(trained, tmp_path, capfd):
    folder = trained / "run"
    expected = _knn(tmp_path, folder, "run")
    capfd.readouterr()
    got = _knn(tmp_path, folder / "encoder", "encoder")
    output = "".join(capfd.readouterr())
    assert got["dataset"] == expected["dataset"] == "attg-mae-synthetic-32px-train48-val16-seed0"
    assert [row["top1"] for row in got["results"]] == [row["top1"] for row in expected["results"]]
    assert "LOAD REPORT" not in output and "UNEXPECTED" not in output and "pooler" not in output


# ------------------------------------------------------------------------------------------- a self-maps run's length

@pytest.mark.parametrize("length", [("--max_steps", "7"), ("--max_steps", "-1", "--num_train_epochs", "1.5")])
def test_a_self_maps_run_whose_first_maps_come_in_its_last_step_or_epoch_is_accepted(tmp_path, length):
    # 48 images / batch 8: 6 steps an epoch, the first maps at the start of epoch 1 (step 6); one step after is
    # enough (tests/test_bad_inputs_pretrain.py refuses --max_steps 6 and a run of W epochs)
    run(*parse_arguments(tiny_pretrain_args(
        tmp_path, "--attention_method", "self", "--attention_refresh_epochs", "1", "--attention_warmup_epochs", "1",
        "--warmup_steps", "0", "--eval_strategy", "no", "--save_strategy", "no", "--num_pictures", "0", *length)))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert [e["self_map_refresh_epoch"] for e in state["log_history"] if "self_map_refresh_epoch" in e] == [1]
    assert state["global_step"] > 6
