"""Label-free guidance: online maps (every batch, from the augmented crop) and self-bootstrapped maps (the model's
own encoder, refreshed every K epochs), a streaming source, and the flag combinations that cannot work."""

import json
import shutil

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from modeling_attg_mae.data.transforms import to_normalized_tensor
from modeling_attg_mae.object_discovery import OnlineAttentionMaps, add_attention_maps
from modeling_attg_mae.pretraining import parse_arguments, run

from tests.conftest import tiny_model, tiny_pretrain_args

RUN_MEAN, RUN_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # not the detectors' (ImageNet): the de-normalisation counts


def _images(count=4, size=32):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def _stored_and_online(method, path, grid, images, **params):
    data = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    stored = add_attention_maps(data, method, path, grid_size=grid, device="cpu", **params)
    stored = torch.tensor(np.array(stored["attention_map"]), dtype=torch.float32)  # (B, G, G), float16 values
    # the crop is the identity: the training pixel_values are the whole image, normalised with the run's mean/std
    pixels = torch.stack([to_normalized_tensor(image, RUN_MEAN, RUN_STD) for image in images])
    online = OnlineAttentionMaps.build(method, path, image_mean=RUN_MEAN, image_std=RUN_STD, **params)(pixels)
    return stored, online


# (method, detector, params, stored grid, atol): the detector's input is the image's own size, so neither path
# resizes; what is left is the stored column's float16 (2.4e-4 at 1.0) and, for spectral_residual, PIL's rounding
# of the grayscale image to 1/255, which the tensor path does not do (measured 0.028 in [0, 1] map units)
IDENTITY_CASES = [
    ("dino", "vit", dict(image_size=32), 4, 2.5e-4),
    ("dino", "dinov2_registers", dict(image_size=32), 4, 2.5e-4),
    ("tokencut", "vit", dict(image_size=32), 4, 0.0),
    ("gradcam", "resnet", dict(image_size=32), 4, 2.5e-4),
    ("spectral_residual", None, dict(image_size=32), 32, 0.04),
]


@pytest.mark.parametrize("method,detector,params,grid,atol", IDENTITY_CASES, ids=[c[0] + "-" + str(c[1]) for c in IDENTITY_CASES])
def test_online_maps_equal_the_stored_maps_for_an_identity_crop(detector_checkpoints, method, detector, params, grid,
                                                                atol):
    path = detector_checkpoints[detector] if detector else None
    stored, online = _stored_and_online(method, path, grid, _images(), **params)
    assert online.shape == stored.shape and online.dtype == torch.float32
    assert online.amin() == 0 and online.amax() == 1  # min-max normalised per image, as the stored column
    assert (online - stored).abs().max() <= atol
    assert stored.flatten(1).std(1).min() > 0.05  # non-trivial maps: equality of two constants would prove nothing


def test_online_maps_through_a_resize_agree_with_pil_to_the_resampling(detector_checkpoints):
    # detector input 64 px for 32 px images: PIL's bicubic on uint8 vs torch's antialiased bicubic on floats
    stored, online = _stored_and_online("dino", detector_checkpoints["vit"], 8, _images(), image_size=64)
    assert (online - stored).abs().max() < 0.03  # measured 0.016
    assert (online - stored).abs().mean() < 0.005


def test_column_has_no_online_path():
    with pytest.raises(ValueError, match="cannot give online maps.*dino"):
        OnlineAttentionMaps.build("column", None)


def test_the_detector_gets_no_gradient_and_is_not_in_the_model_the_optimizer_or_the_checkpoint(detector_checkpoints,
                                                                                              tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainingArguments

    from modeling_attg_mae.data import PretrainCollator, PretrainTransform
    from modeling_attg_mae.pretraining import AttGTrainer

    online = OnlineAttentionMaps.build("dino", detector_checkpoints["vit"], image_size=32)
    detector = online.detector
    before = {name: p.detach().clone() for name, p in detector.named_parameters()}
    model = tiny_model().train()
    data = datasets.Dataset.from_dict({"image": _images(8)}, features=datasets.Features({"image": datasets.Image()}))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                             remove_unused_columns=False, report_to=[], save_strategy="no", logging_strategy="no",
                             dataloader_num_workers=0, disable_tqdm=True)
    collator = PretrainCollator(PretrainTransform(32, 8), require_attention_map=False)
    trainer = AttGTrainer(model=model, args=args, train_dataset=data, data_collator=collator,
                          online_attention_maps=online)
    seen = []
    real_call = online.__call__
    online_call = lambda pixels: seen.append(real_call(pixels)) or seen[-1]  # noqa: E731
    trainer.online_attention_maps = online_call
    trainer.train()
    assert len(seen) == 2 and seen[0].shape == (4, 4, 4) and not seen[0].requires_grad
    assert not detector.training
    for name, parameter in detector.named_parameters():
        assert parameter.grad is None and not parameter.requires_grad, name
        assert torch.equal(parameter, before[name]), name  # frozen: not one step of the optimizer reached it
    detector_storage = {p.data_ptr() for p in detector.parameters()}
    assert not detector_storage & {p.data_ptr() for p in model.parameters()}
    optimized = {p.data_ptr() for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not detector_storage & optimized
    trainer.save_model(str(tmp_path / "saved"))
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    assert len(saved) == len(tiny_model().state_dict()) and not any("detector" in key for key in saved)


def test_an_online_run_trains_with_maps_of_the_augmented_crop(detector_checkpoints, tmp_path):
    args = tiny_pretrain_args(tmp_path, "--attention_online", "--attention_method", "dino",
                              "--attention_model_name_or_path", detector_checkpoints["vit"], "--max_steps", "3",
                              "--eval_strategy", "no", "--num_pictures", "0", "--save_strategy", "no")
    paths = run(*parse_arguments(args))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    shares = [e["object_loss_share"] for e in state["log_history"] if "object_loss_share" in e]
    assert len(shares) == 3 and all(0 < share < 1 for share in shares)  # maps reached the loss on every step
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*attention*"))
    assert paths["checkpoint"] == str(tmp_path / "out")


def test_a_streaming_source_pretrains_three_steps(detector_checkpoints, tmp_path):
    from modeling_attg_mae.data import load_synthetic_dataset

    source = load_synthetic_dataset(num_train=24, num_validation=8, image_size=32, cache_dir=str(tmp_path / "c"))
    streaming = datasets.IterableDatasetDict({split: part.to_iterable_dataset() for split, part in source.items()})
    args = tiny_pretrain_args(tmp_path, "--attention_online", "--attention_method", "spectral_residual",
                              "--max_steps", "3", "--eval_strategy", "no", "--save_strategy", "no", synthetic=False)
    run(*parse_arguments(args), dataset=streaming)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    # a streaming split without --max_steps, or with a stored map column, is refused before any model is built
    with pytest.raises(ValueError, match="no length: pass --max_steps"):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, name="o2", synthetic=False)), dataset=streaming)
    with pytest.raises(ValueError, match="streaming training split cannot get a stored map column"):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "3", name="o3", synthetic=False)),
            dataset=streaming)


def _with_a_stored_constant_map_column(tmp_path):
    from modeling_attg_mae.data import load_synthetic_dataset

    source = load_synthetic_dataset(num_train=24, num_validation=8, image_size=32, cache_dir=str(tmp_path / "c"))
    return datasets.DatasetDict({split: part.add_column("attention_map", [[[0.0] * 8] * 8] * len(part))
                                 for split, part in source.items()})


def test_online_maps_replace_a_stored_map_column_the_source_happens_to_have(tmp_path):
    # the constant stored maps would give object_loss_share 0 (no patch reaches 0.5): the online ones do not
    args = tiny_pretrain_args(tmp_path, "--attention_online", "--attention_method", "spectral_residual",
                              "--max_steps", "3", "--eval_strategy", "no", "--num_pictures", "0", "--save_strategy",
                              "no", synthetic=False)
    run(*parse_arguments(args), dataset=_with_a_stored_constant_map_column(tmp_path))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    shares = [e["object_loss_share"] for e in state["log_history"] if "object_loss_share" in e]
    assert len(shares) == 3 and all(0 < share < 1 for share in shares)


def test_the_self_maps_warm_up_ignores_a_stored_map_column(tmp_path):
    # one warm-up epoch (3 steps): a plain MAE, whose loss logs no object_loss_share, not a run guided by the column
    # (a second epoch, guided by the first self maps: a run that ends with its warm-up is refused)
    args = tiny_pretrain_args(tmp_path, "--attention_method", "self", "--attention_refresh_epochs", "1",
                              "--num_train_epochs", "2", "--eval_strategy", "no", "--save_strategy", "no",
                              "--num_pictures", "0", "--dataloader_num_workers", "0", synthetic=False)
    run(*parse_arguments(args), dataset=_with_a_stored_constant_map_column(tmp_path))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert not [e for e in state["log_history"] if "object_loss_share" in e and e["step"] <= 3]


def test_a_second_pass_over_a_stream_draws_new_crops(tmp_path, monkeypatch):
    from modeling_attg_mae.data import PretrainCollator, load_synthetic_dataset
    from modeling_attg_mae.seeding import mix_seed

    # 16 rows, batch 8, 4 steps: two passes over the stream, which the Trainer reads as one epoch of 4 steps
    # (StreamPasses): each example carries its pass, which seeds its crop
    source = load_synthetic_dataset(num_train=16, num_validation=8, image_size=32, cache_dir=str(tmp_path / "c"))
    streaming = datasets.IterableDatasetDict({split: part.to_iterable_dataset() for split, part in source.items()})
    seen = []
    real_call = PretrainCollator.__call__

    def recording_call(self, examples):
        if self.seed is not None:  # the training collator (the evaluation one draws nothing)
            # the crop of a row is seeded by its own pass, not by the collator's (Trainer) epoch
            assert all(self._generator(e).initial_seed() == mix_seed(self.seed, e["__epoch__"], e["__index__"])
                       for e in examples)
            seen.append(({example["__epoch__"] for example in examples},
                         [example["image"]["bytes"] for example in examples]))
        return real_call(self, examples)

    monkeypatch.setattr(PretrainCollator, "__call__", recording_call)
    args = tiny_pretrain_args(tmp_path, "--attention_online", "--attention_method", "spectral_residual",
                              "--max_steps", "4", "--eval_strategy", "no", "--save_strategy", "no",
                              "--num_pictures", "0", "--dataloader_num_workers", "0", synthetic=False)
    run(*parse_arguments(args), dataset=streaming)
    # accelerate's loader reads one batch ahead: the endless stream collates a 5th batch (of the third pass), unused
    assert [epochs for epochs, _ in seen] == [{0}, {0}, {1}, {1}, {2}]  # the crop seed's pass: new crops each pass
    # the stream is shuffled (as the Trainer's sampler shuffles a map-style split), differently on each pass
    passes = [sum((rows for _, rows in seen[:2]), []), sum((rows for _, rows in seen[2:4]), [])]
    in_order = [image["bytes"] for image in source["train"].cast_column("image", datasets.Image(decode=False))["image"]]
    assert sorted(passes[0]) == sorted(passes[1]) == sorted(in_order)  # every row once a pass
    assert passes[0] != in_order and passes[1] != in_order and passes[0] != passes[1]


def test_streaming_flag_streams_a_hub_layout_folder_through_the_cli(tmp_path):
    import run_pretrain
    from modeling_attg_mae.data import load_synthetic_dataset

    # a Hub-layout folder (data/<split>-*.parquet, as a Hub dataset repo holds it), streamed by load_dataset
    source = load_synthetic_dataset(num_train=24, num_validation=8, image_size=32, cache_dir=str(tmp_path / "c"))
    (tmp_path / "hub" / "data").mkdir(parents=True)
    for split in ("train", "validation"):
        source[split].select_columns(["image", "label"]).to_parquet(str(tmp_path / "hub" / "data" /
                                                                        f"{split}-00000-of-00001.parquet"))
    flags = tiny_pretrain_args(tmp_path, "--dataset_name", str(tmp_path / "hub"), "--streaming", "--attention_online",
                               "--attention_method", "spectral_residual", "--max_steps", "3", "--eval_strategy",
                               "no", "--save_strategy", "no", synthetic=False)
    run_pretrain.main(flags)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (tmp_path / "out" / "model.safetensors").is_file()
    shares = [e["object_loss_share"] for e in state["log_history"] if "object_loss_share" in e]
    assert len(shares) == 3 and all(0 < share < 1 for share in shares)  # online maps on every streamed batch


@pytest.mark.parametrize("extra, message", [
    ([], r"--streaming streams a Hub dataset \(--dataset_name\) or an image folder"),  # the synthetic data
    (["--dataset_name", "SAVED"], "is a save_to_disk folder, already prepared on disk: it does not stream"),
    (["--dataset_name", "x/y", "--max_steps", "-1"], "no length: pass --max_steps"),
    (["--dataset_name", "x/y", "--max_steps", "3"], "cannot get a stored map column"),
    (["--dataset_name", "x/y", "--max_steps", "3", "--attention_online", "--run_knn"], "--run_knn / --knn_monitor"),
    (["--dataset_name", "x/y", "--max_steps", "3", "--attention_online", "--save_strategy", "epoch"],
     "--save_strategy epoch: a streaming training split is read pass after pass as one epoch"),
])
def test_streaming_flag_refuses_what_cannot_stream_before_any_data_work(tmp_path, monkeypatch, extra, message):
    import modeling_attg_mae.pretraining.wiring as wiring

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1]})}).save_to_disk(tmp_path / "saved")
    extra = [str(tmp_path / "saved") if e == "SAVED" else e for e in extra]
    monkeypatch.setattr(wiring, "load_data_source", lambda *a, **k: pytest.fail("data loaded before the check"))
    with pytest.raises(ValueError, match=message):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, "--streaming", "--attention_method", "spectral_residual",
                                                *extra, synthetic="--dataset_name" not in extra)))


# ------------------------------------------------------------------------------------------- self-bootstrapped

SELF_FLAGS = ("--attention_method", "self", "--attention_refresh_epochs", "1", "--attention_warmup_epochs", "1",
              "--num_train_epochs", "3", "--save_steps", "3", "--eval_strategy", "no", "--learning_rate", "2e-3",
              "--warmup_steps", "0", "--dataloader_num_workers", "0")  # 48 images / batch 8: 6 steps an epoch


def _maps(folder):
    saved = torch.load(folder / "self_attention_maps.pt", weights_only=True)
    return saved["epoch"], saved["maps"]


def test_self_maps_warm_up_as_mae_change_only_at_refresh_points_and_survive_a_resume(tmp_path):
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *SELF_FLAGS, name="full")))
    full = tmp_path / "full"
    state = json.loads((full / "trainer_state.json").read_text())
    # the warm-up epoch is a plain MAE: the same losses as a guidance-none run (same init, crops and masks)
    run(*parse_arguments(tiny_pretrain_args(tmp_path, "--attg_guidance", "none", *SELF_FLAGS[6:], name="mae")))
    mae = json.loads((tmp_path / "mae" / "trainer_state.json").read_text())
    losses = lambda s: {e["step"]: e["loss"] for e in s["log_history"] if "loss" in e}  # noqa: E731
    assert [losses(state)[step] for step in range(1, 7)] == [losses(mae)[step] for step in range(1, 7)]
    assert not (full / "checkpoint-3" / "self_attention_maps.pt").exists()  # no maps during the warm-up
    # refreshes at the start of epochs 1 and 2 (steps 6 and 12): checkpoints 9 and 12 hold epoch 1's maps
    assert _maps(full / "checkpoint-9")[0] == _maps(full / "checkpoint-12")[0] == 1
    assert torch.equal(_maps(full / "checkpoint-9")[1], _maps(full / "checkpoint-12")[1])
    epoch, later = _maps(full / "checkpoint-15")
    assert epoch == 2 and (later.float() - _maps(full / "checkpoint-12")[1].float()).abs().max() > 1e-3
    assert later.shape == (48, 8, 8) and later.dtype == torch.float16
    assert later.flatten(1).amax(1).min() == 1 and later.flatten(1).amin(1).max() == 0  # normalised per image
    # the loss after the warm-up is the guided one: it differs from MAE's on the same batch (step 7 starts from the
    # same weights in both runs: the six warm-up steps above were equal)
    assert losses(state)[7] != pytest.approx(losses(mae)[7], rel=1e-3)
    refreshes = [e for e in state["log_history"] if "self_map_refresh_epoch" in e]
    assert [e["self_map_refresh_epoch"] for e in refreshes] == [1, 2]
    assert all(0 <= e["self_map_iou"] <= 1 for e in refreshes)
    assert (full / "pictures" / "self-maps-epoch-0001.png").is_file()
    assert (full / "pictures" / "self-maps-epoch-0002.png").is_file()
    # resumed inside epoch 1 (step 9) by a new process state: the same maps and weights as the uninterrupted run
    resumed = tmp_path / "resumed"
    shutil.copytree(full / "checkpoint-9", resumed / "checkpoint-9")
    resume = tiny_pretrain_args(tmp_path, *SELF_FLAGS, "--resume_from_checkpoint", str(resumed / "checkpoint-9"),
                                name="resumed")
    from modeling_attg_mae.pretraining.wiring import self_maps_resume_verified

    if not self_maps_resume_verified():  # the minimum-versions stack: refused, not continued differently
        with pytest.raises(ValueError, match="resuming a --attention_method self run is verified with transformers"):
            run(*parse_arguments(resume))
        return
    run(*parse_arguments(resume))
    # checkpoint 12 holds the maps restored from checkpoint 9: bit for bit. Those of 15 and 18 are recomputed at
    # epoch 2 from the resumed weights, which equal the uninterrupted run's bit for bit on the pinned stack but only
    # to float rounding on the minimum one (transformers 5.16: losses within 1e-5, maps within 0.03 of 1)
    assert torch.equal(_maps(resumed / "checkpoint-12")[1], _maps(full / "checkpoint-12")[1])
    for step in (12, 15, 18):
        assert _maps(resumed / f"checkpoint-{step}")[0] == _maps(full / f"checkpoint-{step}")[0]
        torch.testing.assert_close(_maps(resumed / f"checkpoint-{step}")[1].float(),
                                   _maps(full / f"checkpoint-{step}")[1].float(), atol=0.03, rtol=0, msg=lambda m: f"{step}: {m}")
    again = json.loads((resumed / "trainer_state.json").read_text())
    for step in range(10, 19):
        assert losses(again)[step] == pytest.approx(losses(state)[step], rel=1e-5), step
    # resumed at the end of the warm-up (step 6, a checkpoint without maps): the maps of epoch 1 are computed from the
    # resumed weights at the start of epoch 1, as in the uninterrupted run
    boundary = tmp_path / "boundary"
    shutil.copytree(full / "checkpoint-6", boundary / "checkpoint-6")
    assert not (boundary / "checkpoint-6" / "self_attention_maps.pt").exists()
    run(*parse_arguments(tiny_pretrain_args(tmp_path, *SELF_FLAGS, "--resume_from_checkpoint",
                                            str(boundary / "checkpoint-6"), name="boundary")))
    for step in (9, 12, 15, 18):
        assert torch.equal(_maps(boundary / f"checkpoint-{step}")[1], _maps(full / f"checkpoint-{step}")[1]), step
    # a checkpoint of another refresh schedule: its maps are not those this run's epoch trains with
    other = tmp_path / "other"
    shutil.copytree(full / "checkpoint-9", other / "checkpoint-9")
    schedule = [*SELF_FLAGS, "--attention_refresh_epochs", "2", "--attention_warmup_epochs", "0"]
    with pytest.raises(ValueError, match="a run with other arguments \\(attention_refresh_epochs 1 there, 2 here; "
                                         "attention_warmup_epochs 1 there, 0 here\\)"):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, *schedule, "--resume_from_checkpoint",
                                                str(other / "checkpoint-9"), name="other")))
    # a checkpoint without the run's fingerprint (an older version's): the maps' own record still refuses it
    state_file = other / "checkpoint-9" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["RunFingerprintCallback"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="holds the maps of epoch 1, but .* epoch 1 trains with those of epoch 0"):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, *schedule, "--resume_from_checkpoint",
                                                str(other / "checkpoint-9"), name="other")))


def test_online_maps_are_checked_only_under_their_debug_flag_and_a_broken_one_makes_the_loss_nan(monkeypatch):
    from modeling_attg_mae.object_discovery import METHODS

    pixels = torch.stack([to_normalized_tensor(image, RUN_MEAN, RUN_STD) for image in _images(3)])
    compute = METHODS["spectral_residual"].compute

    def broken(self, inputs):
        maps = compute(self, inputs)
        maps[1, 0, 0] = float("inf")
        return maps

    monkeypatch.setattr(METHODS["spectral_residual"], "compute", broken)
    # the debug flag: refused where the map is made (a device-to-host read of every batch's maps)
    checked = OnlineAttentionMaps.build("spectral_residual", None, image_mean=RUN_MEAN, image_std=RUN_STD,
                                        image_size=32, check_finite=True)
    with pytest.raises(ValueError, match="map 1: attention_map contains NaN or inf values"):
        checked(pixels)
    # by default nothing is read back: the broken map stays NaN through the normalisation (not a constant map, which
    # would train that image as a plain MAE) and the guided loss of the batch is NaN
    maps = OnlineAttentionMaps.build("spectral_residual", None, image_mean=RUN_MEAN, image_std=RUN_STD,
                                     image_size=32)(pixels)
    assert torch.isnan(maps[1]).all() and torch.isfinite(maps[[0, 2]]).all()
    model = tiny_model()
    assert torch.isnan(model(pixels, attention_map=maps).loss)


def test_self_maps_refuse_a_non_finite_map_at_the_refresh(monkeypatch):
    from modeling_attg_mae.object_discovery.dino import DinoAttention
    from modeling_attg_mae.pretraining.self_maps import self_attention_maps

    compute = DinoAttention.compute

    def diverged(self, inputs):
        maps = compute(self, inputs)
        if len(maps) == 1:  # the second slice of rows (0, 1), (2,)
            maps[0, 1, 1] = float("nan")
        return maps

    monkeypatch.setattr(DinoAttention, "compute", diverged)
    data = datasets.Dataset.from_dict({"image": _images(3)}, features=datasets.Features({"image": datasets.Image()}))
    with pytest.raises(ValueError, match="row 2: attention_map contains NaN or inf values"):
        self_attention_maps(tiny_model(seed=2), data, "image", RUN_MEAN, RUN_STD, grid_size=4, batch_size=2)


def test_self_maps_are_the_encoders_last_layer_cls_attention_averaged_over_heads():
    from modeling_attg_mae.pretraining.self_maps import self_attention_maps

    model = tiny_model(seed=2)
    images = _images(3)
    data = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    maps = self_attention_maps(model, data, "image", RUN_MEAN, RUN_STD, grid_size=4, batch_size=2)
    # by hand: eager attention of the last layer with masking off and patch order kept
    pixels = torch.stack([to_normalized_tensor(image, RUN_MEAN, RUN_STD) for image in images])
    model.config.mask_ratio = 0.0
    out = model.vit(pixels, noise=torch.arange(16.0).expand(3, -1), output_hidden_states=True)
    layer = model.vit.layers[-1]
    hidden = layer.layernorm_before(out.hidden_states[-2])  # the last block's input after its pre-norm
    attention = layer.attention
    q = attention.q_proj(hidden).view(3, 17, 2, 16).transpose(1, 2)
    k = attention.k_proj(hidden).view(3, 17, 2, 16).transpose(1, 2)
    cls = ((q[:, :, :1] @ k.transpose(-1, -2)) / 4.0).softmax(-1)[:, :, 0, 1:].mean(1)  # (3, 16), heads averaged
    low, high = cls.amin(1, keepdim=True), cls.amax(1, keepdim=True)
    expected = ((cls - low) / (high - low)).view(3, 4, 4)
    assert torch.allclose(maps.float(), expected, atol=5e-4)  # float16 storage


# ------------------------------------------------------------------------------------------- bad combinations

@pytest.mark.parametrize("flags,message", [
    (("--attention_online", "--attention_method", "column", "--attention_source_column", "object_mask"),
     "--attention_online cannot be used with --attention_method column"),
    (("--attention_online", "--attention_method", "self", "--attention_refresh_epochs", "1"),
     "--attention_online cannot be used with --attention_method self"),
    (("--attention_method", "self", "--attention_refresh_epochs", "0"), "--attention_refresh_epochs must be >= 1"),
    (("--attention_method", "self"), "needs --attention_refresh_epochs"),
    (("--attention_method", "self", "--attention_refresh_epochs", "1", "--attention_warmup_epochs", "-1"),
     "--attention_warmup_epochs must be >= 0"),
    (("--attention_refresh_epochs", "2"), "--attention_refresh_epochs is for --attention_method self"),
    (("--attention_method", "self", "--attention_refresh_epochs", "1", "--attention_model_name_or_path", "x"),
     "uses the training model's own encoder"),
    (("--attention_online_check",), "--attention_online_check checks the maps of --attention_online"),
])
def test_bad_combinations_fail_at_parse_time(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_arguments(tiny_pretrain_args(tmp_path, *flags))


@pytest.mark.parametrize("flags,message", [
    (("--attention_method", "self", "--attention_refresh_epochs", "1", "--attg_guidance", "none"),
     "--attention_method self gives maps for the guided loss, but --attg_guidance is none"),
    (("--attention_online", "--attention_method", "spectral_residual", "--attg_guidance", "none"),
     "--attention_online computes maps, but --attg_guidance none uses none"),
    (("--attention_method", "self", "--attention_refresh_epochs", "1", "--dataloader_persistent_workers", "true"),
     "persistent workers"),
])
def test_bad_combinations_fail_before_any_data_work(tmp_path, monkeypatch, flags, message):
    import modeling_attg_mae.pretraining.wiring as wiring

    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded before the check")

    monkeypatch.setattr(wiring, "load_data_source", no_data)
    with pytest.raises(ValueError, match=message):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, *flags)))


def test_map_iou_thresholds_the_map_at_its_mean_and_the_mask_at_half_a_cell():
    from modeling_attg_mae.pretraining.self_maps import map_iou, mask_grids

    maps = torch.tensor([[[0.9, 0.8], [0.1, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])  # means 0.45 and 0.25
    masks = torch.tensor([[[True, False], [False, False]], [[True, True], [False, False]]])
    # image 1: predicted {0, 1}, mask {0}: IoU 1/2; image 2: predicted {0}, mask {0, 1}: IoU 1/2
    assert map_iou(maps, masks) == pytest.approx(0.5)
    assert map_iou(maps, maps >= 0.5) == pytest.approx((1.0 + 1.0) / 2)
    # a 4x4 mask with 3 foreground pixels in the top-left 2x2 cell (75%) and 1 in the top-right (25%)
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0] = mask[0, 1] = mask[1, 0] = mask[0, 3] = 255
    assert mask_grids([Image.fromarray(mask)], 2).tolist() == [[[True, False], [False, False]]]


def test_the_study_reaches_the_label_free_arms_and_leaves_the_others_as_they_were():
    from pathlib import Path

    from benchmarks.attg_vs_mae import LABEL_FREE_ARMS, run_arguments

    for arm in ("none", "attg"):
        argv = run_arguments(0, arm, Path("out"), [])
        assert not any(flag in argv for flag in ("--attention_online", "--attention_refresh_epochs"))
        assert argv[argv.index("--attg_guidance") + 1] == arm
    _, data, attg, _ = parse_arguments(run_arguments(0, "self", Path("out"), []))
    assert (attg.attg_guidance, data.attention_method, data.attention_refresh_epochs) == ("attg", "self", 2)
    _, data, attg, _ = parse_arguments(run_arguments(0, "online_sr", Path("out"), []))
    assert (attg.attg_guidance, data.attention_method, data.attention_online) == ("attg", "spectral_residual", True)
    _, data, attg, _ = parse_arguments(run_arguments(0, "sr", Path("out"), []))  # the same detector, stored once
    assert (attg.attg_guidance, data.attention_method, data.attention_online) == ("attg", "spectral_residual", False)
    assert set(LABEL_FREE_ARMS) == {"self", "online_sr", "sr"}
