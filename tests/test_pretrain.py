"""run_pretrain.py: arguments and MAE defaults, a short real run, resume, two processes, card, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import Trainer, ViTMAEModel

from modeling_attg_mae.pretraining import parse_arguments, run

from tests.conftest import REPO, TINY_PRETRAIN_CONFIG, tiny_pretrain_args


def test_learning_rate_follows_mae_scaling_unless_given(tmp_path):
    *_, training = parse_arguments(["--output_dir", str(tmp_path), "--per_device_train_batch_size", "64",
                                    "--gradient_accumulation_steps", "2"])
    assert training.learning_rate == pytest.approx(1.5e-4 * 64 * 2 / 256)
    assert (training.adam_beta1, training.adam_beta2, training.weight_decay) == (0.9, 0.95, 0.05)
    assert str(training.lr_scheduler_type).endswith("cosine") and training.warmup_steps == 0.05
    assert training.remove_unused_columns is False
    *_, training = parse_arguments(["--output_dir", str(tmp_path), "--learning_rate", "3e-3",
                                    "--adam_beta2", "0.99", "--base_learning_rate", "1e-3"])
    assert training.learning_rate == 3e-3 and training.adam_beta2 == 0.99  # explicit values win
    *_, training = parse_arguments(["--output_dir", str(tmp_path), "--base_learning_rate", "1e-3",
                                    "--per_device_train_batch_size", "512"])
    assert training.learning_rate == pytest.approx(2e-3)


def test_a_json_file_is_accepted_as_the_only_argument(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path / "o"), "per_device_train_batch_size": 32,
                                "attg_temperature": 0.7, "model_preset": "small"}))
    model_args, data_args, attg_args, training = parse_arguments([str(path)])
    assert attg_args.attg_temperature == 0.7 and model_args.model_preset == "small"
    assert training.learning_rate == pytest.approx(1.5e-4 * 32 / 256)
    path.write_text(json.dumps({"output_dir": "o", "learning_rat": 1.0}))
    with pytest.raises(ValueError, match="unknown argument.*learning_rat"):
        parse_arguments([str(path)])


def test_no_argument_means_the_demo():
    model_args, data_args, attg_args, training = parse_arguments([])
    assert model_args.model_preset == "demo" and data_args.dataset_name is None and attg_args.run_knn
    assert training.output_dir.endswith("attg-mae-demo")


def test_explicit_flags_are_found_in_every_spelling_argparse_accepts(tmp_path):
    from modeling_attg_mae.cli import explicit_flags as flags_of
    from modeling_attg_mae.pretraining import ARGUMENT_TYPES

    def explicit_flags(argv):
        return flags_of(ARGUMENT_TYPES, argv)

    argv = ["--output_dir", str(tmp_path), "--learning-rate", "0.01", "--adam_beta2=0.999", "--run_knn",
            "--no_remove_unused_columns", "--eval_splits", "validation", "validation_only_fg", "--seed=4",
            "--warmup_step", "3"]  # hyphens, '=', a bare boolean, a no_ flag, a list, an abbreviation
    assert explicit_flags(argv) == {"output_dir", "learning_rate", "adam_beta2", "run_knn", "remove_unused_columns",
                                    "eval_splits", "seed", "warmup_steps"}
    assert explicit_flags(["--output_dir", str(tmp_path)]) == {"output_dir"}
    # the values a user gave win over MAE's recipe, even when they equal the library's defaults (0.999 is
    # TrainingArguments' adam_beta2, True its remove_unused_columns): a scan for '--name' missed the hyphen form
    # and the abbreviation, and MAE's values silently replaced them
    *_, training = parse_arguments(argv + ["--remove_unused_columns"])
    assert training.learning_rate == 0.01 and training.adam_beta2 == 0.999 and training.warmup_steps == 3
    assert training.remove_unused_columns is True  # the later of --no_remove_unused_columns / --remove_unused_columns
    *_, training = parse_arguments(["--output_dir", str(tmp_path), "--dataloader-pin-memory"])
    assert training.dataloader_pin_memory is True and training.adam_beta2 == 0.95


def test_attg_knobs_default_to_the_config_class_and_reach_the_config(tmp_path):
    from modeling_attg_mae import AttGViTMAEConfig
    from modeling_attg_mae.pretraining import CONFIG_FIELDS, build_config

    model_args, _, attg_args, _ = parse_arguments(["--output_dir", str(tmp_path)])
    for name in CONFIG_FIELDS:  # one home for each default: the config class
        given = getattr(model_args if hasattr(model_args, name) else attg_args, name)
        assert given == getattr(AttGViTMAEConfig, name), name
    assert model_args.norm_pix_loss is True  # MAE's recipe; stock ViTMAEConfig's default is False
    config = build_config(model_args, attg_args)
    assert [getattr(config, name) for name in CONFIG_FIELDS] == [0.75, True, "attg", 0.75, 1.0, "cosine", 0.1]
    model_args, _, attg_args, _ = parse_arguments([
        "--output_dir", str(tmp_path), "--mask_ratio", "0.6", "--no_norm_pix_loss", "--attg_guidance", "inverted",
        "--attg_temperature", "0.5", "--attg_temperature_end", "2", "--attg_temperature_schedule", "constant",
        "--attg_quantile", "0.3"])
    config = build_config(model_args, attg_args)
    assert [getattr(config, name) for name in CONFIG_FIELDS] == [0.6, False, "inverted", 0.5, 2.0, "constant", 0.3]
    # continuing from a checkpoint: the run's values replace what the checkpoint stored (an export stores
    # mask_ratio 0 for stock feature extraction, and the knobs of the run that trained it)
    AttGViTMAEConfig(**TINY_PRETRAIN_CONFIG, mask_ratio=0.0, attg_pretraining_mask_ratio=0.75, attg_temperature=0.4,
                     norm_pix_loss=False, attg_guidance="none").save_pretrained(tmp_path / "checkpoint")
    model_args, _, attg_args, _ = parse_arguments(["--output_dir", str(tmp_path), "--model_name_or_path",
                                                    str(tmp_path / "checkpoint")])
    config = build_config(model_args, attg_args)
    assert [getattr(config, name) for name in CONFIG_FIELDS] == [0.75, True, "attg", 0.75, 1.0, "cosine", 0.1]
    assert config.attg_pretraining_mask_ratio is None and config.hidden_size == 32
    # an override is validated by the config's update_from_string, once; the error names the flag and the field
    model_args, _, attg_args, _ = parse_arguments(["--output_dir", str(tmp_path), "--config_overrides",
                                                    "attg_quantile=1.5"])
    with pytest.raises(ValueError, match=r"--config_overrides 'attg_quantile=1.5': attg_quantile must be in \[0, 1\)"):
        build_config(model_args, attg_args)


def test_data_loader_workers_follow_the_machine_when_the_defaults_are_applied(tmp_path, monkeypatch):
    import modeling_attg_mae.pretraining.arguments as arguments

    for cores, workers in ((32, 8), (6, 3), (3, 1), (2, 0), (1, 0), (None, 0)):  # no worker where none is free
        monkeypatch.setattr(arguments.os, "cpu_count", lambda: cores)
        *_, training = parse_arguments(["--output_dir", str(tmp_path)])
        assert training.dataloader_num_workers == workers, cores
    *_, training = parse_arguments(["--output_dir", str(tmp_path), "--dataloader_num_workers", "0"])
    assert training.dataloader_num_workers == 0


def test_the_trainer_and_callbacks_are_exported_lazily_by_the_package():
    code = ("import sys, modeling_attg_mae as m; assert 'datasets' not in sys.modules, 'eager datasets'; "
            "assert 'modeling_attg_mae.pretraining' not in sys.modules; "
            "from modeling_attg_mae import AttGTrainer, AugmentationEpochCallback, KNNMonitorCallback, "
            "ReconstructionPictureCallback; from modeling_attg_mae.pretraining import trainer; "
            "from modeling_attg_mae.evaluation.monitor import KNNMonitorCallback as K; "
            "assert AttGTrainer is trainer.AttGTrainer and KNNMonitorCallback is K; "
            "assert {'AttGTrainer', 'KNNMonitorCallback'} <= set(m.__all__) <= set(dir(m)); "
            "from modeling_attg_mae import *")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    import modeling_attg_mae

    with pytest.raises(AttributeError, match="has no attribute 'AttGTrainr'"):
        modeling_attg_mae.AttGTrainr


def test_weight_decay_spares_biases_and_norms(tmp_path):
    from modeling_attg_mae.pretraining import build_model

    model_args, _, attg_args, training = parse_arguments(tiny_pretrain_args(tmp_path))
    model = build_model(model_args, attg_args)
    decay = set(Trainer(model=model, args=training).get_decay_parameter_names(model))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n not in decay for n in names if n.endswith(".bias") or "norm" in n or "layernorm" in n)
    assert "vit.layers.0.attention.q_proj.weight" in decay and "decoder.decoder_pred.weight" in decay


def scalars(log_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = [p for p in log_dir.iterdir() if p.is_dir()]
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return {"scalars": set(events.Tags()["scalars"]), "images": set(events.Tags()["images"])}


def test_three_step_run_writes_a_stock_loadable_checkpoint_card_logs_and_pictures(tmp_path):
    paths = run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "3", "--eval_strategy", "steps",
                                           "--eval_steps", "3", "--save_steps", "3")))
    out = tmp_path / "out"
    encoder = ViTMAEModel.from_pretrained(out)  # stock class, no remote code
    assert encoder(torch.randn(1, 3, 32, 32)).last_hidden_state.shape == (1, 1 + 16, 32)  # every patch token
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction" and card.data.library_name == "transformers"
    assert {"attg-mae", "mae", "vit", "self-supervised"} <= set(card.data.tags)
    assert "spectral_residual" in card.text and "cosine" in card.text and "0.75" in card.text
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert [round(e["attg_temperature"], 4) for e in logged] == [0.75, 0.8125, 0.9375]  # cosine, 3 steps
    assert all(0 <= e["object_loss_share"] <= 1 for e in logged)
    assert any("eval_loss" in entry for entry in state["log_history"])
    assert sorted(os.listdir(out / "pictures")) == ["step-0000003.png"]
    tags = scalars(Path(paths["logs"]))
    assert {"train/loss", "train/attg_temperature", "train/object_loss_share", "eval/loss"} <= tags["scalars"]
    assert "reconstructions" in tags["images"]
    # TensorBoard receives the picture itself (sent from memory), pixel for pixel the PNG written next to the run
    import io

    import numpy as np
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = [p for p in Path(paths["logs"]).iterdir() if p.is_dir()]
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("reconstructions")
    assert image.step == 3
    sent = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
    written = np.asarray(Image.open(out / "pictures" / "step-0000003.png"))
    assert sent.shape == written.shape == (2 * 128 + 4, 4 * 128 + 12, 3) and np.array_equal(sent, written)


def test_torch_compile_pretrains_end_to_end_with_the_eager_losses(tmp_path):
    # --torch_compile (the Trainer's torch.compile, inductor): the guided forward traces without a graph break (no
    # host read of the maps), two optimizer steps give the losses of the same run in eager mode. One C++ compile of
    # the tiny model's forward and backward: about a minute on two busy cores
    import torch._dynamo
    from torch._dynamo.utils import counters

    common = ("--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no", "--num_pictures", "0")
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *common, name="eager")))
    torch._dynamo.reset()
    counters.clear()
    try:
        run(*parse_arguments(tiny_pretrain_args(tmp_path, *common, "--torch_compile", "true", name="compiled")))
    finally:
        torch._dynamo.reset()
    losses = {name: [e["loss"] for e in json.loads((tmp_path / name / "trainer_state.json").read_text())["log_history"]
                     if "loss" in e] for name in ("eager", "compiled")}
    assert len(losses["compiled"]) == 2
    assert dict(counters["graph_break"]) == {}  # one graph: the map's finiteness check was a data-dependent break
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
    assert ViTMAEModel.from_pretrained(tmp_path / "compiled")(torch.randn(1, 3, 32, 32)).last_hidden_state.shape == (
        1, 1 + 16, 32)  # the saved weights are the model's, not a compiled wrapper's


def test_online_maps_are_checked_as_they_are_made_under_the_debug_flag(tmp_path):
    from modeling_attg_mae.pretraining.wiring import build_online_maps

    flags = ("--attention_online", "--attention_method", "spectral_residual")
    for extra, checked in (((), False), (("--attention_online_check",), True)):
        _, data_args, _, training_args = parse_arguments(tiny_pretrain_args(tmp_path, *flags, *extra))
        maps = build_online_maps(data_args, training_args, (0.5,) * 3, (0.25,) * 3)
        assert maps.check_finite is checked


def test_feature_pipeline_returns_every_patch_token(tmp_path):
    from PIL import Image
    from transformers import pipeline

    run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no")))
    extractor = pipeline("image-feature-extraction", model=str(tmp_path / "out"), device="cpu")
    features = torch.tensor(extractor(Image.new("RGB", (40, 40), (120, 30, 200))))
    assert features.shape == (1, 1 + 16, 32)


def test_resume_continues_with_the_same_tau_step_and_weights(tmp_path):
    # lr 2e-3: a weight left at its fresh value after the resume moves the loss by ~0.3 and the final weights by
    # far more than the tolerance (at MAE's scaled lr for batch 8, ~5e-6, a lost tensor would not show)
    common = ("--max_steps", "4", "--save_steps", "2", "--eval_strategy", "no", "--num_pictures", "0",
              "--learning_rate", "2e-3", "--warmup_steps", "0")
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *common, name="full")))
    # the interrupted run: identical up to step 2, then continued from its checkpoint by a new process state
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *common, name="resumed")))
    resumed = tmp_path / "resumed"
    for entry in os.listdir(resumed):  # keep only the step-2 checkpoint, as if the run had died after it
        if entry != "checkpoint-2":
            path = resumed / entry
            subprocess.run(["rm", "-rf", str(path)], check=True)
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *common, "--resume_from_checkpoint", str(resumed / "checkpoint-2"),
                                   name="resumed")))
    full = json.loads((tmp_path / "full" / "trainer_state.json").read_text())
    again = json.loads((resumed / "trainer_state.json").read_text())
    assert again["global_step"] == full["global_step"] == 4
    logged = lambda state, key: {e["step"]: e[key] for e in state["log_history"] if "loss" in e}
    assert logged(again, "attg_temperature") == logged(full, "attg_temperature")
    # the same weights, crops, masks and batches after the resume: the losses agree to float rounding
    for step in (3, 4):
        assert logged(again, "loss")[step] == pytest.approx(logged(full, "loss")[step], rel=1e-5)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), name
    # and the weights did move: a tensor left at its initial value would differ from the trained one
    initial = load_file(tmp_path / "full" / "checkpoint-2" / "model.safetensors")
    assert max((a[n] - initial[n]).abs().max().item() for n in a) > 1e-3


def test_knn_monitor_equals_run_knn_on_the_exported_checkpoint(tmp_path):
    # bank and queries are whole splits here (48 / 16 images), as run_knn.py uses them; the monitor's last value
    # is measured on the final weights, which is what the export holds
    paths = run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "6", "--eval_strategy", "no", "--num_pictures",
                                           "0", "--learning_rate", "2e-3", "--knn_monitor", "--knn_monitor_steps",
                                           "4", "--run_knn")))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    measured = [e for e in state["log_history"] if "eval_knn_top1_validation" in e]
    assert [e["step"] for e in measured] == [4, 6]  # every 4 steps and the last one
    splits = ("validation", "validation_mixed_rand", "validation_only_fg")
    offline = json.loads(Path(paths["knn_results"]).read_text())["results"]
    for split in splits:
        (expected,) = [r["top1"] for r in offline if r["method"] == "knn" and r["k"] == 20 and r["split"] == split]
        assert measured[-1][f"eval_knn_top1_{split}"] == pytest.approx(expected, abs=1e-3), split
    assert {f"eval/knn_top1_{split}" for split in splits} <= scalars(Path(paths["logs"]))["scalars"]
    # watching does not change what is trained: the same weights without the monitor
    run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "6", "--eval_strategy", "no", "--num_pictures", "0",
                                   "--learning_rate", "2e-3", name="unmonitored")))
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "out" / "model.safetensors"), load_file(tmp_path / "unmonitored" / "model.safetensors")
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_paired_arms_see_identical_initial_weights_batches_maps_and_masking_noise(tmp_path, monkeypatch):
    """The study's pairing: a MAE arm and an AttG arm of one seed differ only in the loss."""
    import modeling_attg_mae.pretraining.wiring as wiring

    seen = {}
    build_model, compute_loss = wiring.build_model, wiring.AttGTrainer.compute_loss

    def recording_build_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        seen[arm]["init"] = {k: v.clone() for k, v in model.state_dict().items()}
        return model

    def recording_compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            noise = self._masking_noise(inputs["pixel_values"])  # the call compute_loss would make ...
            self._noise_step = None  # ... undone, so that compute_loss draws the same noise again
            seen[arm]["batches"].append((inputs["pixel_values"].clone(), inputs["attention_map"].clone(), noise))
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(wiring, "build_model", recording_build_model)
    monkeypatch.setattr(wiring.AttGTrainer, "compute_loss", recording_compute_loss)
    for arm in ("none", "attg"):
        seen[arm] = {"batches": []}
        run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "3", "--eval_strategy", "no", "--num_pictures", "0",
                                       "--attg_guidance", arm, "--maps_for_vanilla_mae", name=arm)))
    mae, attg = seen["none"], seen["attg"]
    assert mae["init"].keys() == attg["init"].keys()
    assert all(torch.equal(mae["init"][k], attg["init"][k]) for k in mae["init"])
    assert len(mae["batches"]) == len(attg["batches"]) == 3
    for (pixels_a, maps_a, noise_a), (pixels_b, maps_b, noise_b) in zip(mae["batches"], attg["batches"]):
        assert torch.equal(pixels_a, pixels_b) and torch.equal(maps_a, maps_b) and torch.equal(noise_a, noise_b)
    assert not torch.equal(mae["batches"][0][0], mae["batches"][1][0])  # the batches themselves differ
    # only the loss differs: MAE logs the share of its unweighted loss on object patches, AttG a larger one
    share = {arm: [e["object_loss_share"] for e in json.loads((tmp_path / arm / "trainer_state.json").read_text())
                   ["log_history"] if "loss" in e] for arm in seen}
    assert len(share["none"]) == 3 and all(a > m for a, m in zip(share["attg"], share["none"]))


def test_two_processes_with_accelerate_launch(tmp_path):
    env = dict(os.environ, ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(REPO / "run_pretrain.py"),
               *tiny_pretrain_args(tmp_path, "--max_steps", "2", "--eval_strategy", "no", "--num_pictures", "0",
                          "--knn_monitor", "--knn_monitor_steps", "1", "--run_knn")]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| num_processes | 2 |" in card
    # MAE's rule with the effective batch of both processes: 1.5e-4 * (8 * 2) / 256
    assert f"| learning_rate | {1.5e-4 * 16 / 256:g} |" in card
    assert ViTMAEModel.from_pretrained(tmp_path / "out") is not None
    # the online k-NN ran in both processes (sharded features, one gather) at steps 1 and 2
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "eval_knn_top1_validation" in e] == [1, 2]
    # and the k-NN after training, sharded over both processes, read the finished export
    results = json.loads((tmp_path / "out" / "knn_results.json").read_text())
    assert results["num_processes"] == 2 and {r["split"] for r in results["results"]} == {
        "validation", "validation_mixed_rand", "validation_only_fg"}


# bad input: tests/test_bad_inputs_pretrain.py (the table behind docs/TROUBLESHOOTING.md)


def test_an_image_folder_without_images_is_refused(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "notes.txt").write_text("no image here")
    args = [a for a in tiny_pretrain_args(tmp_path, "--max_steps", "1", synthetic=False) if a]
    with pytest.raises(ValueError, match=str(tmp_path / "images")):
        run(*parse_arguments(args + ["--train_dir", str(tmp_path / "images")]))


def test_an_existing_output_dir_is_not_overwritten_unless_asked(tmp_path):
    run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "1", "--eval_strategy", "no")))
    earlier = (tmp_path / "out" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="exists and is not empty.*overwrite_output_dir"):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "1")))
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == earlier
    # --overwrite_output_dir replaces the earlier run's outputs, but not a file the package did not write
    (tmp_path / "out" / "precious.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds precious.txt, which this package did not write"):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "1", "--overwrite_output_dir")))
    assert (tmp_path / "out" / "precious.txt").read_text() == "mine"
    (tmp_path / "out" / "precious.txt").unlink()
    run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "2", "--eval_strategy", "no",
                                   "--overwrite_output_dir")))
    assert (tmp_path / "out" / "model.safetensors").read_bytes() != earlier


def test_another_process_probing_the_output_dir_is_not_an_earlier_run(tmp_path):
    # the processes of one run check the folder at the same time; one's write probe must not stop the other
    # (seen as a rank-0 crash of the two-process test)
    from modeling_attg_mae.checkpointing import _WRITE_PROBE

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / f"{_WRITE_PROBE}x1y2").write_text("")
    run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "1", "--eval_strategy", "no", "--num_pictures", "0")))
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_masking_noise_is_new_for_each_micro_batch_and_reproducible(tmp_path):
    from transformers import TrainingArguments

    from modeling_attg_mae.pretraining import AttGTrainer
    from tests.conftest import tiny_model

    def trainer():
        args = TrainingArguments(output_dir=str(tmp_path), report_to=[], seed=5, gradient_accumulation_steps=2)
        return AttGTrainer(model=tiny_model(), args=args)

    pixels = torch.zeros(3, 3, 32, 32)
    first = trainer()
    a, b = first._masking_noise(pixels), first._masking_noise(pixels)  # two micro-batches of step 0
    first.state.global_step = 1
    c = first._masking_noise(pixels)
    assert a.shape == (3, 16) and not torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(b, c)
    again = trainer()  # a new trainer (e.g. after a resume) draws the same masks for the same step
    assert torch.equal(again._masking_noise(pixels), a) and torch.equal(again._masking_noise(pixels), b)


def test_a_streaming_run_is_fingerprinted_with_its_loader_workers_and_processes(tmp_path):
    # datasets orders a stream read in a loader worker differently: a resume with another worker count skipped rows
    # of another order (some replayed, some never seen) without a word; map-style runs may change it freely
    import copy

    from modeling_attg_mae.pretraining import parse_arguments
    from modeling_attg_mae.pretraining.arguments import run_fingerprint
    from tests.conftest import tiny_pretrain_args

    model_args, data_args, attg_args, training_args = parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "2"))
    two_workers = copy.copy(training_args)
    two_workers.dataloader_num_workers = 2
    assert run_fingerprint(model_args, data_args, attg_args, training_args) == run_fingerprint(
        model_args, data_args, attg_args, two_workers)
    streaming = copy.copy(data_args)
    streaming.streaming = True  # set after parsing: the synthetic source cannot stream, the fingerprint is the point
    zero = run_fingerprint(model_args, streaming, attg_args, training_args)
    two = run_fingerprint(model_args, streaming, attg_args, two_workers)
    assert (zero["dataloader_num_workers"], two["dataloader_num_workers"]) == (training_args.dataloader_num_workers, 2)
    assert zero["world_size"] == 1
