"""End to end: run_knn / run_linear_probe on a tiny random-weight checkpoint and tiny datasets built here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ResNetConfig, ResNetModel, ViTConfig, ViTModel

from modeling_attg_mae.cli import format_results_table
from modeling_attg_mae.evaluation import knn_classify
from modeling_attg_mae.evaluation.arguments import EvalModelArguments, KNNArguments, LinearProbeArguments
from modeling_attg_mae.evaluation.pipelines import run_knn, run_linear_probe
from tests.conftest import REPO, colour_dataset, eval_arguments, image_folders, reference_features


def test_knn_run_matches_hand_pipeline_and_caches(checkpoint, tmp_path):
    dataset = colour_dataset()
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path)
    knn_args = KNNArguments(ks=[1, 3, 10], few_shot=[1, 2], few_shot_k=3)
    first = run_knn(model_args, data_args, run_args, knn_args, dataset=dataset)
    assert first["cache_hits"] == {"train": False, "validation": False, "validation_shifted": False}

    bank, queries = reference_features(checkpoint, dataset["train"]), reference_features(checkpoint, dataset["validation"])
    bank_labels, labels = torch.tensor(dataset["train"]["label"]), torch.tensor(dataset["validation"]["label"])
    knn_rows = {r["k"]: r for r in first["results"] if r["method"] == "knn" and r["split"] == "validation"}
    assert sorted(knn_rows) == [1, 3, 10]
    for k, row in knn_rows.items():
        ranked = knn_classify(bank, bank_labels, queries, ks=[k])[k]
        assert row["top1"] == pytest.approx(100 * (ranked[:, 0] == labels).float().mean().item())
        assert row["top5"] == 100.0 and row["num_queries"] == 12  # 3 classes: top-5 always hits

    few = [r for r in first["results"] if r["method"] == "knn_few_shot" and r["split"] == "validation" and r["shots"] == 2]
    assert [r["seed"] for r in few] == [0, 1, 2, None]
    assert few[-1]["top1"] == pytest.approx(np.mean([r["top1"] for r in few[:3]]))
    assert few[-1]["top1_std"] == pytest.approx(np.std([r["top1"] for r in few[:3]], ddof=1))

    saved = json.loads((tmp_path / "out" / "knn_results.json").read_text())
    assert saved["results"] == first["results"] and saved["schema_version"] == 1
    assert {"method", "split", "k", "shots", "seed", "top1", "top5"} <= set(saved["results"][0])

    from huggingface_hub import ModelCard

    card = ModelCard.load(checkpoint / "README.md")
    # 2 splits x (3 k + 2 few-shot means) x (top1, top5): every metric kept, none merged
    assert len(card.data.eval_results) == 2 * 5 * 2
    assert len({(r.dataset_split, r.metric_config) for r in card.data.eval_results}) == 20

    second = run_knn(model_args, data_args, run_args, knn_args, dataset=dataset)
    assert second["cache_hits"] == {"train": True, "validation": True, "validation_shifted": True}
    assert second["results"] == first["results"]
    _, _, run_overwrite, _ = eval_arguments(checkpoint, tmp_path, overwrite_cache=True)
    third = run_knn(model_args, data_args, run_overwrite, knn_args, dataset=dataset)
    assert not any(third["cache_hits"].values())
    mean_args = EvalModelArguments(model_name_or_path=str(checkpoint), pooling="mean")
    assert not any(run_knn(mean_args, data_args, run_args, knn_args, dataset=dataset)["cache_hits"].values())


def test_bad_input_gives_clear_errors(checkpoint, tmp_path):
    dataset = colour_dataset()
    knn = KNNArguments(ks=[3])
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path, eval_splits=["test"])
    with pytest.raises(ValueError, match=r"--eval_splits: unknown split 'test'.*'train', 'validation'"):
        run_knn(model_args, data_args, run_args, knn, dataset=dataset)
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path, label_column_name="class")
    with pytest.raises(ValueError, match=r"'class' not found.*\['image', 'label'\]"):
        run_knn(model_args, data_args, run_args, knn, dataset=dataset)
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path)
    with pytest.raises(ValueError, match=r"k=100 is larger than the k-NN bank \(24"):
        run_knn(model_args, data_args, run_args, KNNArguments(ks=[10, 100]), dataset=dataset)
    resnet = tmp_path / "resnet"
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1])).save_pretrained(resnet)
    model_args, data_args, run_args, _ = eval_arguments(resnet, tmp_path)
    with pytest.raises(ValueError, match="'resnet' checkpoint, not a ViT"):
        run_knn(model_args, data_args, run_args, knn, dataset=dataset)


def test_plain_vit_checkpoint_and_its_normalisation(tmp_path):
    """Any ViT AutoModel loads; mean/std come from its preprocessor_config.json."""
    from transformers import ViTImageProcessor

    from modeling_attg_mae.model_source import load_encoder

    path = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)).save_pretrained(path)
    ViTImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).save_pretrained(path)
    model, info = load_encoder(str(path))
    assert isinstance(model, ViTModel) and (info.image_size, info.patch_size, info.hidden_size) == (32, 8, 32)
    assert info.image_mean == (0.5, 0.5, 0.5) and info.image_std == (0.25, 0.25, 0.25)
    model_args, data_args, run_args, _ = eval_arguments(path, tmp_path)
    payload = run_knn(model_args, data_args, run_args, KNNArguments(ks=[3]), dataset=colour_dataset())
    assert [r["split"] for r in payload["results"]] == ["validation", "validation_shifted"]


def test_linear_probe_runs_both_modes(checkpoint, tmp_path):
    dataset = colour_dataset()
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path, eval_splits=["validation"], seeds=[0, 1])
    probe = LinearProbeArguments(mode="features", epochs=50, warmup_epochs=5, probe_batch_size=8, base_lr=100.0, few_shot=[3])
    fast = run_linear_probe(model_args, data_args, run_args, probe, dataset=dataset)
    methods = [(r["method"], r["shots"], r["seed"]) for r in fast["results"]]
    assert methods == [("linear_probe_features", None, 0), ("linear_few_shot_features", 3, 0),
                       ("linear_few_shot_features", 3, 1), ("linear_few_shot_features", 3, None)]
    # colour classes are separable even for random weights: the probe must find it
    assert fast["results"][0]["top1"] >= 90.0
    probe = LinearProbeArguments(mode="protocol", epochs=2, warmup_epochs=1, probe_batch_size=8, base_lr=10.0)
    protocol = run_linear_probe(model_args, data_args, run_args, probe, dataset=dataset)
    assert [r["method"] for r in protocol["results"]] == ["linear_probe"]
    row = protocol["results"][0]
    assert 0.0 <= row["top1"] <= 100.0
    # the protocol keeps its fixed lr; the held-out check sweeps the grid plus that lr on the cached train features
    assert (row["lr_selection"], row["base_lr"]) == ("fixed", 10.0)
    assert protocol["cache_hits"]["train"]
    assert 10.0 in [point["base_lr"] for point in row["held_out_check"]["grid"]]


# every evaluation CLI: the same rows and, file by file, the same cached features (tokens for the attentive probe)
# from two processes as from one
TWO_PROCESS_CASES = {
    "knn": ("run_knn.py", ["--ks", "1", "3"], "knn_results.json"),
    "retrieval": ("run_retrieval.py", [], "retrieval_results.json"),
    "attentive_probe": ("run_linear_probe.py", ["--mode", "features", "--head", "attentive", "--epochs", "4",
                                                "--warmup_epochs", "1", "--lr_grid", "1e-3", "1e-2"],
                        "linear_probe_results.json"),
}


@pytest.mark.parametrize("case", sorted(TWO_PROCESS_CASES))
def test_two_process_accelerate_launch_matches_single_process(case, checkpoint, tmp_path):
    script, extra, results_file = TWO_PROCESS_CASES[case]
    train_dir, val_dir = image_folders(tmp_path)
    common = ["--model_name_or_path", str(checkpoint), "--train_dir", str(train_dir), "--validation_dir", str(val_dir),
              *extra, "--batch_size", "4", "--progress", "false", "--update_model_card", "false",
              "--cache_dir", str(tmp_path / "hf")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", script, *common,
         "--output_dir", str(tmp_path / "two"), "--feature_cache_dir", str(tmp_path / "cache_two")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, script, *common, "--output_dir", str(tmp_path / "one"), "--feature_cache_dir", str(tmp_path / "cache_one")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two_json = json.loads((tmp_path / "two" / results_file).read_text())
    one_json = json.loads((tmp_path / "one" / results_file).read_text())
    assert (two_json["num_processes"], one_json["num_processes"]) == (2, 1)
    assert two_json["results"] and two_json["results"] == one_json["results"]
    # the gathered features equal the single-process ones row by row (order kept across the shards)
    from safetensors.torch import load_file

    for name in ("cache_one", "cache_two"):
        assert len(list((tmp_path / name).glob("*.safetensors"))) == 2
    pairs = zip(sorted((tmp_path / "cache_one").glob("*")), sorted((tmp_path / "cache_two").glob("*")))
    for a, b in pairs:  # same keys (checkpoint, dataset, split, transform, pooling) -> same file names
        assert a.name == b.name
        torch.testing.assert_close(load_file(a)["features"], load_file(b)["features"], rtol=1e-5, atol=1e-5)


def test_cli_accepts_a_json_file(checkpoint, tmp_path):
    import run_knn

    train_dir, val_dir = image_folders(tmp_path)
    config = {"model_name_or_path": str(checkpoint), "train_dir": str(train_dir), "validation_dir": str(val_dir),
              "ks": [2], "output_dir": str(tmp_path / "out"), "feature_cache_dir": "", "progress": False,
              "update_model_card": False, "cache_dir": str(tmp_path / "hf")}
    (tmp_path / "args.json").write_text(json.dumps(config))
    payload = run_knn.main([str(tmp_path / "args.json")])
    assert [(r["method"], r["split"], r["k"]) for r in payload["results"]] == [("knn", "validation", 2)]
    assert payload["cache_hits"] == {"train": False, "validation": False}  # "" disables the cache
    assert not (tmp_path / "cache").exists()


def test_linear_probe_sweep_uses_only_train_and_flags_a_degenerate_head(checkpoint, tmp_path, monkeypatch, caplog):
    import modeling_attg_mae.evaluation.linear_probe as linear_probe

    dataset = colour_dataset(per_class=(14, 4, 4))
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path, eval_splits=["validation", "validation_shifted"])
    seen = []
    sweep = linear_probe.sweep_linear_probe_on_features
    monkeypatch.setattr(linear_probe, "sweep_linear_probe_on_features",
                        lambda *args, **kwargs: seen.append(args[:4]) or sweep(*args, **kwargs))
    probe = LinearProbeArguments(mode="features", epochs=20, warmup_epochs=2, probe_batch_size=8, lr_grid=[1e-3, 10.0, 100.0])
    payload = run_linear_probe(model_args, data_args, run_args, probe, dataset=dataset)
    (fit_x, _, held_x, held_y), = seen
    from safetensors.torch import load_file

    cached = [load_file(f)["features"] for f in (tmp_path / "cache").glob("*.safetensors")]
    train_x = next(f for f in cached if len(f) == 42)
    eval_x = torch.cat([f for f in cached if len(f) == 12])  # both eval splits
    assert len(eval_x) == 24
    rows_of = lambda a, b: [bool((a[i] == b).all(1).any()) for i in range(len(a))]  # noqa: E731
    assert all(rows_of(held_x, train_x)) and not any(rows_of(held_x, eval_x))  # the held-out slice is train only
    assert len(held_x) + len(fit_x) == 42 and torch.bincount(held_y).tolist() == [2, 2, 2]  # round(0.15 * 14)
    row = payload["results"][0]
    assert row["lr_selection"] == "held_out_sweep" and row["base_lr"] == row["sweep"]["chosen_base_lr"] in (10.0, 100.0)
    assert [p["base_lr"] for p in row["sweep"]["grid"]] == [1e-3, 10.0, 100.0] and not row["degenerate"]
    # a head that collapsed to class 0 (its bias swamps the features), with a fixed lr: flagged in the JSON and
    # the warning says what to do
    import modeling_attg_mae.evaluation.pipelines as pipelines

    train = pipelines.train_linear_probe_on_features

    def collapsed(*args, **kwargs):
        head = train(*args, **kwargs)
        head.linear.bias.data[0] = 1e4
        return head

    monkeypatch.setattr(pipelines, "train_linear_probe_on_features", collapsed)
    probe = LinearProbeArguments(mode="features", epochs=2, warmup_epochs=1, probe_batch_size=8, sweep=False)
    payload = run_linear_probe(model_args, data_args, run_args, probe, dataset=dataset)
    row = payload["results"][0]
    assert row["lr_selection"] == "fixed" and row["degenerate"], row
    assert row["degenerate_reason"].startswith("predicts class 0 for 100.0% of the 12 images")
    assert "pick the lr on held-out train images" in caplog.text and "DEGENERATE" in format_results_table(payload)
    written = json.loads(Path(payload["results_file"]).read_text())
    assert written["results"][0]["degenerate_reason"] == row["degenerate_reason"]


def test_linear_probe_bad_sweep_input_fails_before_any_work(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="lr_grid must hold at least one"):
        LinearProbeArguments(mode="features", lr_grid=[])
    with pytest.raises(ValueError, match="few_shot sizes \\[1\\] leave no training image"):
        LinearProbeArguments(mode="features", few_shot=[1, 10])
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path, eval_splits=["validation"])
    with pytest.raises(ValueError, match="leaves class 0 .1 images. with no training image"):
        run_linear_probe(model_args, data_args, run_args, LinearProbeArguments(mode="features"), dataset=colour_dataset((1, 2, 2)))
    assert not (tmp_path / "cache").exists()  # no feature was extracted
