"""Fine-tuning with MAE's recipe: the recipe pieces against hand-computed values, low-shot subsets, 3-step runs from
our checkpoint and from a stock ViTMAE checkpoint, stock loading of the result, two processes, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ResNetConfig, ResNetModel, TrainingArguments, ViTConfig, ViTForImageClassification, ViTMAEConfig, ViTMAEForPreTraining

from modeling_attg_mae.evaluation.arguments import EvalDataArguments
from modeling_attg_mae.fine_tuning import (
    AttGViTForImageClassification,
    FineTuneTrainTransform,
    Mixup,
    RandAugment,
    add_drop_path,
    layer_decay_param_groups,
    sample_fraction,
    smoothed_one_hot,
    soft_target_cross_entropy,
)
from modeling_attg_mae.fine_tuning.arguments import FineTuneArguments, FineTuneModelArguments, parse_fine_tune_arguments
from modeling_attg_mae.fine_tuning.run import run_fine_tune
from tests.conftest import TINY_ENCODER, colour_dataset, colour_image

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_ENCODER  # conftest's tiny encoder: 2 layers, width 32, 32 px, 8 px patches


def _tiny_vit(num_layers=2, **kwargs):
    config = ViTConfig(**{**TINY, "num_hidden_layers": num_layers}, num_labels=3, **kwargs)
    torch.manual_seed(0)
    return AttGViTForImageClassification(config)


# ---- layer decay -------------------------------------------------------------------------------------------------

def test_layer_decay_groups_of_a_four_layer_model_match_hand_values():
    model = _tiny_vit(num_layers=4, attg_global_pool=True)
    groups = layer_decay_param_groups(model, 4, weight_decay=0.05, layer_decay=0.75)
    scale = {name: (g["lr_scale"], g["weight_decay"]) for g in groups for name in g["names"]}
    # depth 0 (embeddings): 0.75^5; layer i: 0.75^(4 - i); after the last layer: 1
    assert scale["vit.embeddings.cls_token"] == (0.2373046875, 0.0)
    assert scale["vit.embeddings.position_embeddings"] == (0.2373046875, 0.0)
    assert scale["vit.embeddings.patch_embeddings.projection.weight"] == (0.2373046875, 0.05)
    assert scale["vit.embeddings.patch_embeddings.projection.bias"] == (0.2373046875, 0.0)
    for layer, expected in enumerate((0.31640625, 0.421875, 0.5625, 0.75)):
        assert scale[f"vit.layers.{layer}.attention.q_proj.weight"] == (expected, 0.05)
        assert scale[f"vit.layers.{layer}.mlp.fc1.bias"] == (expected, 0.0)
        assert scale[f"vit.layers.{layer}.layernorm_before.weight"] == (expected, 0.0)
    assert scale["classifier.weight"] == (1.0, 0.05)
    assert scale["classifier.bias"] == (1.0, 0.0)
    assert scale["fc_norm.weight"] == (1.0, 0.0)
    assert scale["vit.layernorm.weight"] == (1.0, 0.0)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


# ---- drop path ---------------------------------------------------------------------------------------------------

def test_drop_path_is_active_in_training_and_off_in_eval():
    model = _tiny_vit(num_layers=4)
    reference = _tiny_vit(num_layers=4)  # same seed: same weights, no drop path
    rates = add_drop_path(model, 0.3)
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert set(model.state_dict()) == set(reference.state_dict())  # no key added: stock classes load it
    pixels = torch.randn(64, 3, 32, 32)
    model.eval(), reference.eval()
    torch.testing.assert_close(model(pixels).logits, reference(pixels).logits, rtol=0, atol=0)
    model.train(), reference.train()  # dropout probabilities are 0: only drop path acts in training
    torch.manual_seed(1)
    first, second = model(pixels).logits, model(pixels).logits
    assert not torch.allclose(first, reference(pixels).logits) and not torch.allclose(first, second)
    for layer, rate in zip(model.vit.layers, rates):  # each layer's residual branches: 0 or scaled by 1 / (1 - rate)
        branch = layer.dropout(torch.ones(2000, 3, 1))[:, 0, 0]
        expected = [1.0] if rate == 0 else [0.0, 1 / (1 - rate)]
        assert branch.unique().tolist() == pytest.approx(expected)
        assert abs(float((branch == 0).float().mean()) - rate) < 0.04


def test_drop_path_scales_kept_samples_and_zeroes_dropped_ones():
    from modeling_attg_mae.fine_tuning import drop_path

    torch.manual_seed(0)
    x = torch.ones(1000, 3, 4)
    out = drop_path(x, 0.25, training=True)
    per_sample = out[:, 0, 0]
    assert per_sample.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert torch.equal(out, out[:, :1, :1].expand_as(out))  # whole samples, not single elements
    assert abs(float((per_sample == 0).float().mean()) - 0.25) < 0.05
    assert torch.equal(drop_path(x, 0.25, training=False), x)


# ---- mixup / cutmix / smoothing ----------------------------------------------------------------------------------

def test_smoothed_targets_by_hand():
    targets = smoothed_one_hot(torch.tensor([2, 0]), 4, 0.1)
    torch.testing.assert_close(targets, torch.tensor([[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]]))


@pytest.mark.parametrize("mixup_alpha,cutmix_alpha", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_targets_sum_to_one_and_smoothing_is_applied_once(mixup_alpha, cutmix_alpha):
    mixup = Mixup(5, mixup_alpha, cutmix_alpha, label_smoothing=0.1)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    pixels = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 8, 8).contiguous()
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        lam, use_cutmix = Mixup(5, mixup_alpha, cutmix_alpha).sample(torch.Generator().manual_seed(seed))
        mixed, targets = mixup(pixels, labels, generator)
        torch.testing.assert_close(targets.sum(1), torch.ones(6))
        # smoothing once: lam * smooth(y) + (1 - lam) * smooth(flip(y)), with smooth = 0.9 one-hot + 0.02
        lam_true = 1 - float((mixed[0] != pixels[0]).float().mean()) if use_cutmix else lam
        expected = lam_true * smoothed_one_hot(labels, 5, 0.1) + (1 - lam_true) * smoothed_one_hot(labels.flip(0), 5, 0.1)
        torch.testing.assert_close(targets, expected, rtol=1e-5, atol=1e-5)
        assert float(targets.min()) >= 0.02 * (1 - 1e-5)  # a second smoothing would lift the floor above 0.02
        if not use_cutmix:  # Mixup: every pixel is lam * x + (1 - lam) * x_reversed
            torch.testing.assert_close(mixed[0], lam * pixels[0] + (1 - lam) * pixels[5])
    assert torch.equal(pixels[:, 0, 0, 0], torch.arange(6, dtype=torch.float32))  # the input is not modified


def test_mixup_lambda_switch_and_prob_follow_timms_distributions():
    # the test above reuses sample()'s own lam, so a wrong Beta or switch would pass it; here the moments: Beta(a, a)
    # has mean 1/2 and variance 1 / (4 (2a + 1)); CutMix is picked with switch_prob, a batch is mixed with prob
    generator, n = torch.Generator().manual_seed(0), 4000
    draws = [Mixup(5, 0.8, 1.0, switch_prob=0.5, prob=0.7).sample(generator) for _ in range(n)]
    mixed = [(lam, cut) for lam, cut in draws if lam < 1.0]
    assert abs(len(mixed) / n - 0.7) < 0.03
    cut = np.array([lam for lam, c in mixed if c])
    mix = np.array([lam for lam, c in mixed if not c])
    assert abs(len(cut) / len(mixed) - 0.5) < 0.035
    assert abs(mix.mean() - 0.5) < 0.02 and abs(mix.var() - 1 / (4 * 2.6)) < 0.008  # Beta(0.8, 0.8)
    assert abs(cut.mean() - 0.5) < 0.02 and abs(cut.var() - 1 / 12) < 0.008  # Beta(1, 1): uniform
    only_cutmix = [Mixup(5, 0.0, 1.0).sample(generator) for _ in range(50)]
    assert all(c for _, c in only_cutmix)


def test_mixing_stream_is_named_by_seed_step_micro_batch_and_process():
    # the package's one seed-mixing rule (seeding.seeded_generator), written out by hand: a resumed run draws what
    # the uninterrupted one drew at the same (step, micro-batch), and no two named streams coincide
    from types import SimpleNamespace

    from modeling_attg_mae.fine_tuning.run import FineTuneTrainer

    def by_hand(seed, step, micro, process):
        mixed = seed * 0x9E3779B1 + step * 0x85EBCA77 + micro * 0xC2B2AE3D + process * 0x27D4EB2F
        return torch.Generator().manual_seed(mixed % 2**63)

    trainer = SimpleNamespace(args=SimpleNamespace(seed=7, process_index=1), state=SimpleNamespace(global_step=3))
    draws = []
    for step, micro in [(3, 0), (3, 1), (4, 0)]:  # two micro-batches of step 3, then step 4 starts again at 0
        trainer.state.global_step = step
        got = torch.rand(4, generator=FineTuneTrainer._mix_generator(trainer))
        assert torch.equal(got, torch.rand(4, generator=by_hand(7, step, micro, 1)))
        draws.append(got)
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_random_erasing_fills_one_box_with_per_pixel_normal_noise():
    from modeling_attg_mae.fine_tuning import random_erasing

    areas, aspects, noise = [], [], []
    for seed in range(200):
        pixels = random_erasing(torch.full((3, 64, 64), 7.0), 1.0, torch.Generator().manual_seed(seed))
        erased = (pixels != 7.0).all(0)  # (64, 64): the box, the same pixels in every channel
        rows, cols = erased.any(1).nonzero().flatten(), erased.any(0).nonzero().flatten()
        height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(erased.sum()) == height * width  # one rectangle
        areas.append(height * width / 64 ** 2), aspects.append(height / width)
        noise.append(pixels[:, erased].flatten())
    assert 0.015 <= min(areas) and max(areas) <= 1 / 3 + 0.02  # scale (0.02, 1/3), rounded sides
    assert 0.25 <= min(aspects) and max(aspects) <= 1 / 0.25
    noise = torch.cat(noise)  # mode "pixel": every pixel and channel its own N(0, 1) draw
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 1) < 0.01
    assert noise.unique().numel() > 0.99 * noise.numel()
    assert sum(bool(random_erasing(torch.zeros(3, 8, 8), 0.25, torch.Generator().manual_seed(s)).any())
               for s in range(400)) in range(70, 131)  # p = 0.25: 100 of 400


def test_soft_target_cross_entropy_equals_the_smoothed_cross_entropy():
    logits, labels = torch.randn(7, 5), torch.randint(0, 5, (7,))
    ours = soft_target_cross_entropy(logits, smoothed_one_hot(labels, 5, 0.1))
    torch.testing.assert_close(ours, torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1))


# ---- augmentation ------------------------------------------------------------------------------------------------

def test_train_transform_is_deterministic_per_generator_and_keeps_the_shape():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    transform = FineTuneTrainTransform(32, 8, RandAugment(), random_erase_prob=1.0)
    a = transform(image, torch.Generator().manual_seed(3))
    b = transform(image, torch.Generator().manual_seed(3))
    c = transform(image, torch.Generator().manual_seed(4))
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)


def test_rand_augment_levels_match_timms_increasing_mappings():
    import random

    from modeling_attg_mae.fine_tuning.augment import RAND_AUGMENT_OPS

    image = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).convert("RGB")  # every grey level once
    grey = lambda im: np.asarray(im)[..., 0].astype(int).ravel()  # noqa: E731
    rng, fill = random.Random(0), (124, 116, 104)
    levels = np.arange(256)
    # timm: bits = 4 - int(level / 10 * 4): level 9 keeps 1 bit, level 10 keeps 0 bits (a black image)
    assert grey(RAND_AUGMENT_OPS["PosterizeIncreasing"](image, 9.0, rng, fill)).tolist() == (levels & 0x80).tolist()
    assert grey(RAND_AUGMENT_OPS["PosterizeIncreasing"](image, 10.0, rng, fill)).tolist() == [0] * 256
    # solarize threshold 256 - int(level / 10 * 256): 26 at level 9; solarize-add adds int(level / 10 * 110) below 128
    assert grey(RAND_AUGMENT_OPS["SolarizeIncreasing"](image, 9.0, rng, fill)).tolist() == np.where(
        levels >= 26, 255 - levels, levels).tolist()
    assert grey(RAND_AUGMENT_OPS["SolarizeAdd"](image, 9.0, rng, fill)).tolist() == np.where(
        levels < 128, np.minimum(255, levels + 99), levels).tolist()


def test_pixels_an_op_uncovers_get_the_normalisation_mean():
    # a black image translated by 45 % of its width: the uncovered strip is the fill colour, which timm takes from
    # the normalisation mean, so it normalises to ~0 (not to ImageNet's mean under another checkpoint's mean)
    from modeling_attg_mae.fine_tuning.augment import fill_color

    assert fill_color((0.485, 0.456, 0.406)) == (124, 116, 104)
    ops = RandAugment(magnitude=10, magnitude_std=0, num_ops=1, prob=1.0)
    ops.names = ["TranslateXRel"]
    mean, std = (0.5, 0.3, 0.7), (0.25, 0.25, 0.25)
    transform = FineTuneTrainTransform(32, 8, ops, random_erase_prob=0.0, mean=mean, std=std)
    pixels = transform(Image.new("RGB", (32, 32)), torch.Generator().manual_seed(0))
    black = -torch.tensor(mean) / 0.25  # (0 - mean) / std
    columns = pixels.view(3, -1, 32).mean(1)  # (3, 32): mean of each column
    uncovered = (columns - black[:, None]).abs().sum(0) > 0.5
    assert 10 <= int(uncovered.sum()) <= 16  # about 0.45 * 32 columns
    torch.testing.assert_close(columns[:, uncovered], torch.zeros(3, int(uncovered.sum())), atol=0.01, rtol=0)


@pytest.mark.parametrize("size,resized", [(224, 256), (192, 219), (240, 240)])
def test_fine_tune_evaluation_crops_as_mae_up_to_224_px_and_not_above(size, resized):
    # MAE's main_finetune.py: crop_pct 224/256 up to 224 px, 1.0 above; a 2:1 image's shorter side goes to `resized`;
    # the crop's offset is transformers' (w - S) // 2 (the saved processor computes the evaluation): 13 at 192 px,
    # where torchvision's round(13.5) is 14
    from modeling_attg_mae.fine_tuning.augment import fine_tune_eval_transform

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 600, 3), dtype=np.uint8))
    scaled = image.resize((2 * resized, resized), resample=Image.BICUBIC)
    left, top = (2 * resized - size) // 2, (resized - size) // 2
    crop = np.asarray(scaled.crop((left, top, left + size, top + size)), dtype=np.float32) / 255
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    expected = torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1)).float()
    torch.testing.assert_close(fine_tune_eval_transform(size, mean.tolist(), std.tolist())(image), expected,
                               rtol=0, atol=1e-5)


# ---- low-shot ----------------------------------------------------------------------------------------------------

def test_fraction_subset_is_class_balanced_and_seeded():
    labels = torch.tensor([0] * 100 + [1] * 50 + [2] * 250)
    subset = sample_fraction(labels, 0.1, seed=0)
    assert torch.bincount(labels[subset]).tolist() == [10, 5, 25]
    assert torch.equal(subset, sample_fraction(labels, 0.1, seed=0))
    assert not torch.equal(subset, sample_fraction(labels, 0.1, seed=1))
    assert torch.bincount(labels[sample_fraction(labels, 0.01, seed=0)]).tolist() == [1, 1, 2]  # at least 1 per class
    assert len(set(subset.tolist())) == subset.numel()


def test_a_training_fraction_and_the_probes_held_out_slice_count_a_class_alike():
    # one rule, evaluation.few_shot.per_class_count: round(fraction * n) (Python's round: half to even), at least 1
    from modeling_attg_mae.evaluation.few_shot import held_out_split, per_class_count

    assert [per_class_count(n, 0.1) for n in (4, 5, 15, 25, 35, 100)] == [1, 1, 2, 2, 4, 10]
    labels = torch.tensor([0] * 15 + [1] * 25 + [2] * 35)
    _, held_out = held_out_split(labels, 0.1, seed=0)
    fraction = sample_fraction(labels, 0.1, seed=0)
    assert torch.bincount(labels[held_out]).tolist() == torch.bincount(labels[fraction]).tolist() == [2, 2, 4]


# ---- end to end --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stock_checkpoint(tmp_path_factory):
    config = ViTMAEConfig(**TINY, decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                          decoder_intermediate_size=32)
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("stock")
    ViTMAEForPreTraining(config).save_pretrained(path)
    return path


def _run(checkpoint, tmp_path, dataset=None, model=None, data=None, fine_tune=None, **training):
    model_args = FineTuneModelArguments(model_name_or_path=str(checkpoint), **(model or {}))
    data_args = EvalDataArguments(**(data or {}))
    fine_tune_args = FineTuneArguments(update_model_card=False, **(fine_tune or {}))
    training_args = TrainingArguments(**{"output_dir": str(tmp_path / "out"), "max_steps": 3, "per_device_train_batch_size": 4,
                                         "per_device_eval_batch_size": 8, "report_to": [], "save_strategy": "no",
                                         "disable_tqdm": True, "use_cpu": True, **training})
    return run_fine_tune(model_args, data_args, fine_tune_args, training_args, dataset=colour_dataset() if dataset is None else dataset)


@pytest.mark.parametrize("start", ["ours", "stock"])
def test_three_step_fine_tune_reports_every_split_and_saves_a_stock_loadable_model(start, checkpoint, stock_checkpoint,
                                                                                  tmp_path):
    source = checkpoint if start == "ours" else stock_checkpoint
    payload = _run(source, tmp_path, model={"global_pool": False, "drop_path": 0.1})
    rows = payload["results"]
    assert {(r["split"], r["seed"]) for r in rows} == {("validation", 42), ("validation_shifted", 42),
                                                       ("validation", None), ("validation_shifted", None)}
    assert all(0 <= r["top1"] <= 100 and r["top5"] == 100.0 for r in rows)  # 3 classes: top-5 holds every class
    saved = tmp_path / "out" / "seed-42"
    state = json.loads((saved / "trainer_state.json").read_text()) if (saved / "trainer_state.json").is_file() else None
    assert json.loads((tmp_path / "out" / "fine_tune_results.json").read_text())["results"] == rows
    # the encoder moved (3 AdamW steps) from the start checkpoint, and stock ViTForImageClassification gives the
    # same logits as our class on the saved model (drop path off in eval, no extra key)
    ours = AttGViTForImageClassification.from_pretrained(saved).eval()
    stock, info = ViTForImageClassification.from_pretrained(saved, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(stock.eval()(pixels).logits, ours(pixels).logits)
    start_model = ViTForImageClassification.from_pretrained(source, num_labels=3)
    assert not torch.equal(start_model.vit.layers[0].mlp.fc1.weight, ours.vit.layers[0].mlp.fc1.weight)
    torch.testing.assert_close(start_model.vit.layers[0].mlp.fc1.weight, ours.vit.layers[0].mlp.fc1.weight,
                               rtol=0, atol=0.05)  # 3 small steps, not a fresh init
    del state


def test_resized_position_embeddings_equal_the_stock_interpolation_and_keep_the_cls_row():
    from modeling_attg_mae.fine_tuning.modeling import resize_position_embeddings

    model = _tiny_vit()  # 32 px, 8 px patches: a 4 x 4 grid
    table = torch.randn(1, 17, 32)
    with torch.no_grad():
        model.vit.embeddings.position_embeddings.copy_(table)
    resized = resize_position_embeddings(table, 6)
    assert resized.shape == (1, 37, 32) and torch.equal(resized[:, 0], table[:, 0])
    # transformers' per-forward interpolation (the same bicubic rule as MAE's interpolate_pos_embed), at 48 px
    stock = model.vit.embeddings.interpolate_pos_encoding(torch.zeros(1, 37, 32), 48, 48)
    torch.testing.assert_close(resized, stock, rtol=0, atol=1e-6)
    assert resize_position_embeddings(table, 4) is table
    constant = torch.full((1, 17, 32), 0.5)  # bicubic (weights summing to 1) keeps a constant grid constant
    torch.testing.assert_close(resize_position_embeddings(constant, 3), torch.full((1, 10, 32), 0.5))
    with pytest.raises(ValueError, match="not CLS \\+ a square grid"):
        resize_position_embeddings(torch.zeros(1, 16, 32), 3)


def test_fine_tune_at_another_size_saves_a_model_stock_pipelines_run(checkpoint, tmp_path, monkeypatch):
    """--image_size 48 on a 32 px checkpoint: the saved config must say 48 (the processor resizes to 48), else the
    stock image-classification pipeline, which passes no interpolate_pos_encoding, refuses the input."""
    from transformers import CLIPImageProcessorPil, ViTForImageClassification, pipeline

    from modeling_attg_mae.fine_tuning import run as run_module

    built, build = [], run_module.build_classifier

    def keep(*args, **kwargs):  # the run's model, trained in place: the fine-tuned model
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(run_module, "build_classifier", keep)
    # the classifier built at 48 px gives the logits of the checkpoint's 32 px grid interpolated on every forward
    config, checkpoint_size = run_module.classifier_config(FineTuneModelArguments(str(checkpoint), global_pool=False,
                                                                                   image_size=48), 3)
    assert (config.image_size, checkpoint_size) == (48, 32)
    torch.manual_seed(0)
    at_48 = keep(FineTuneModelArguments(str(checkpoint), global_pool=False, image_size=48), config, 0.0, 32).eval()
    at_32 = ViTForImageClassification.from_pretrained(checkpoint, num_labels=3).eval()
    at_32.classifier.load_state_dict(at_48.classifier.state_dict())
    pixels = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(at_48(pixels).logits, at_32(pixels, interpolate_pos_encoding=True).logits)
    built.clear()

    _run(checkpoint, tmp_path, model={"global_pool": False, "image_size": 48}, max_steps=2)
    saved = tmp_path / "out" / "seed-42"
    assert json.loads((saved / "config.json").read_text())["image_size"] == 48
    fine_tuned = built[0].eval()
    image = colour_image(1, np.random.default_rng(5))
    # the saved processor, read by its PIL class: AutoImageProcessor of transformers < 5.2x asks for torchvision
    processor = CLIPImageProcessorPil.from_pretrained(saved)
    classify = pipeline("image-classification", model=str(saved), image_processor=processor, device="cpu")
    scores = {row["label"]: row["score"] for row in classify(image, top_k=3, function_to_apply="none")}
    with torch.no_grad():
        pixels = processor(image, return_tensors="pt")["pixel_values"]
        logits = fine_tuned(pixels).logits[0]
    torch.testing.assert_close(torch.tensor([scores[name] for name in "rgb"]), logits, rtol=1e-5, atol=1e-6)


def test_global_pool_checkpoint_round_trips_and_its_row_says_the_pooling(checkpoint, tmp_path):
    payload = _run(checkpoint, tmp_path, fine_tune={"train_fraction": 0.5, "seeds": [0, 1]})
    assert payload["pooling"] == "mean" and payload["recipe"]["layer_decay"] == 0.75
    summary = [r for r in payload["results"] if r["seed"] is None]
    per_seed = [r for r in payload["results"] if r["split"] == "validation" and r["seed"] is not None]
    assert [r["num_train_images"] for r in per_seed] == [12, 12]  # round(0.5 * 8) of each of 3 classes
    validation = next(r for r in summary if r["split"] == "validation")
    assert validation["num_seeds"] == 2 and validation["train_fraction"] == 0.5
    assert validation["top1"] == pytest.approx(np.mean([r["top1"] for r in per_seed]))
    assert validation["top1_std"] == pytest.approx(np.std([r["top1"] for r in per_seed], ddof=1))
    model = AttGViTForImageClassification.from_pretrained(tmp_path / "out" / "seed-1")
    assert model.global_pool and model.fc_norm is not None


def test_model_card_gets_the_mean_over_seeds_per_fraction(checkpoint, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    local = tmp_path / "ckpt"
    shutil.copytree(checkpoint, local)
    model_args = FineTuneModelArguments(model_name_or_path=str(local))
    training_args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=4,
                                      report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True)
    run_fine_tune(model_args, EvalDataArguments(eval_splits=["validation"]),
                  FineTuneArguments(train_fraction=0.5, seeds=[0, 1]), training_args, dataset=colour_dataset())
    results = ModelCard.load(local / "README.md").data.eval_results
    assert sorted(r.metric_config for r in results) == ["fine-tune-50pct-top1-mean", "fine-tune-50pct-top5-mean"]
    assert all("mean of 2 seeds" in r.metric_name and "50% of the labels" in r.metric_name for r in results)


def test_resume_last_keeps_finished_seeds(checkpoint, tmp_path):
    first = _run(checkpoint, tmp_path, fine_tune={"seeds": [0]})
    again = _run(checkpoint, tmp_path, fine_tune={"seeds": [0, 1], "overwrite_output_dir": False},
                 resume_from_checkpoint="last")
    seed0 = [r for r in again["results"] if r["seed"] == 0]
    assert seed0 == [r for r in first["results"] if r["seed"] == 0]
    assert any(r["seed"] == 1 for r in again["results"])


def test_every_process_saves_the_model_and_only_the_main_one_writes_the_rest(checkpoint, tmp_path, monkeypatch):
    """Under FSDP / DeepSpeed `save_model` gathers the weights from every process: called on the main process only,
    it hangs. A process that is not the world's process zero must still call it (the Trainer decides who writes,
    by `args.should_save`), and must not write the image processor or the seed's results."""
    from modeling_attg_mae.fine_tuning.run import FineTuneTrainer

    saved_to = []
    original = FineTuneTrainer.save_model

    def spy(self, output_dir=None, _internal_call=False):
        saved_to.append(output_dir)
        return original(self, output_dir, _internal_call)

    monkeypatch.setattr(FineTuneTrainer, "save_model", spy)
    monkeypatch.setattr(FineTuneTrainer, "is_world_process_zero", lambda self: False)
    _run(checkpoint, tmp_path, max_steps=1)
    seed_dir = tmp_path / "out" / "seed-42"
    assert saved_to == [str(seed_dir)]
    assert (seed_dir / "model.safetensors").is_file() and (seed_dir / "config.json").is_file()
    assert not (seed_dir / "preprocessor_config.json").exists() and not (seed_dir / "seed_results.json").exists()


def test_two_process_launch_matches_the_single_process_rows(checkpoint, tmp_path):
    root = tmp_path / "data"
    dataset = colour_dataset()
    for split, folder in (("train", root / "train"), ("validation", root / "val")):
        for i, example in enumerate(dataset[split]):
            target = folder / "rgb"[example["label"]]
            target.mkdir(parents=True, exist_ok=True)
            example["image"].save(target / f"{i}.png")
    common = ["--model_name_or_path", str(checkpoint), "--train_dir", str(root / "train"), "--validation_dir",
              str(root / "val"), "--max_steps", "2", "--per_device_train_batch_size", "2", "--mixup", "0", "--cutmix", "0",
              "--rand_augment", "false", "--random_erase", "0", "--drop_path", "0", "--report_to", "none",
              "--save_strategy", "no", "--update_model_card", "false", "--disable_tqdm", "true"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "run_fine_tune.py", *common, "--output_dir", str(tmp_path / "two")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    payload = json.loads((tmp_path / "two" / "fine_tune_results.json").read_text())
    assert payload["num_processes"] == 2
    rows = [r for r in payload["results"] if r["seed"] is not None]
    assert [r["num_queries"] for r in rows] == [12]  # every validation image once, gathered from both processes


# ---- bad input ---------------------------------------------------------------------------------------------------

def test_no_label_column_is_refused_before_training(checkpoint, tmp_path):
    dataset = colour_dataset().remove_columns("label")
    with pytest.raises(ValueError, match="label"):
        _run(checkpoint, tmp_path, dataset=dataset)
    assert not (tmp_path / "out" / "seed-42").exists()


def test_unlabelled_training_rows_are_refused_before_training(checkpoint, tmp_path):
    dataset = colour_dataset()
    dataset["train"] = dataset["train"].map(lambda row, i: {"label": -1 if i < 2 else row["label"]}, with_indices=True)
    with pytest.raises(ValueError, match=r"split 'train' has label -1 in 2 rows, outside the class ids \[0, 3\)"):
        _run(checkpoint, tmp_path, dataset=dataset)
    assert not (tmp_path / "out" / "seed-42").exists()


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match=r"--train_fraction must be in \(0, 1\]"):
        FineTuneArguments(train_fraction=fraction)


def test_more_shots_than_a_class_has_is_refused(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="--shots_per_class 9 needs 9 images of every class, but class 0 has only 8"):
        _run(checkpoint, tmp_path, fine_tune={"shots_per_class": 9})
    assert not (tmp_path / "out" / "seed-42").exists()


def test_a_non_vit_checkpoint_is_refused(tmp_path):
    path = tmp_path / "resnet"
    ResNetModel(ResNetConfig(hidden_sizes=[8], depths=[1], embedding_size=8)).save_pretrained(path)
    with pytest.raises(ValueError, match="is a 'resnet' checkpoint"):
        _run(path, tmp_path)


def test_image_size_not_divisible_by_the_patch_is_refused(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="--image_size 36 is not divisible by the patch size 8"):
        _run(checkpoint, tmp_path, model={"image_size": 36})


def test_both_subset_flags_and_a_second_smoothing_are_refused():
    with pytest.raises(ValueError, match="pass one"):
        FineTuneArguments(train_fraction=0.1, shots_per_class=2)
    with pytest.raises(ValueError, match="--label_smoothing_factor would smooth the labels a second time"):
        parse_fine_tune_arguments(["--model_name_or_path", "x", "--label_smoothing_factor", "0.1"])


def test_persistent_workers_are_refused_at_parsing():
    # a persistent worker never sees _EpochCallback's epoch: every epoch would repeat the first one's augmentation
    with pytest.raises(ValueError, match="--dataloader_persistent_workers is not supported.*every epoch would repeat"):
        parse_fine_tune_arguments(["--model_name_or_path", "x", "--dataloader_num_workers", "2",
                                   "--dataloader_persistent_workers", "true"])
    _, _, _, training = parse_fine_tune_arguments(["--model_name_or_path", "x", "--dataloader_num_workers", "2"])
    assert training.dataloader_num_workers == 2 and not training.dataloader_persistent_workers


def test_explicit_flags_in_every_spelling_keep_the_users_values_over_the_recipe(tmp_path):
    """A scan of argv for '--name' missed '--learning-rate', abbreviations and '--no_x': the recipe then replaced
    the user's value (here: lr from base lr x batch / 256, 100 epochs, weight decay 0.05, no unused columns)."""
    argv = ["--model_name_or_path", "x", "--output-dir", str(tmp_path / "o"), "--learning-rate", "0.01",
            "--num_train_epoch", "3", "--weight_decay=0.0", "--remove_unused_columns"]  # hyphens, abbreviation, '='
    _, _, fine_tune, training = parse_fine_tune_arguments(argv)
    assert fine_tune.learning_rate_explicit and training.learning_rate == 0.01
    assert training.num_train_epochs == 3.0 and training.weight_decay == 0.0 and training.remove_unused_columns is True
    assert training.output_dir == str(tmp_path / "o")
    _, _, fine_tune, training = parse_fine_tune_arguments(["--model_name_or_path", "x", "--no_remove_unused_columns"])
    assert not fine_tune.learning_rate_explicit and training.remove_unused_columns is False
    # the recipe's values where nothing was given (TrainingArguments' own defaults are 3 epochs, decay 0, "trainer_output")
    assert training.num_train_epochs == 100.0 and training.weight_decay == 0.05 and training.output_dir == "outputs/fine_tune"
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"model_name_or_path": "x", "learning_rate": 0.02, "num_train_epochs": 2}))
    _, _, fine_tune, training = parse_fine_tune_arguments([str(path)])
    assert fine_tune.learning_rate_explicit and (training.learning_rate, training.num_train_epochs) == (0.02, 2.0)
    assert training.weight_decay == 0.05


def test_non_empty_output_dir_is_not_overwritten(checkpoint, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="exists and is not empty"):
        _run(checkpoint, tmp_path)
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


# ---- reliability (issue 20) ----------------------------------------------------------------------------------------

def _cli_run(checkpoint, tmp_path, *extra, dataset=None):
    """parse_fine_tune_arguments + run_fine_tune, as run_fine_tune.py does, on the colour dataset (or `dataset`)."""
    argv = ["--model_name_or_path", str(checkpoint), "--output_dir", str(tmp_path / "out"), "--per_device_train_batch_size",
            "4", "--per_device_eval_batch_size", "8", "--report_to", "none", "--update_model_card", "false",
            "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--dataloader_pin_memory", "false", *extra]
    return run_fine_tune(*parse_fine_tune_arguments(argv), dataset=colour_dataset() if dataset is None else dataset)


def test_warmup_steps_zero_and_optim_are_honoured_and_the_peak_lr_is_logged_and_recorded(checkpoint, tmp_path):
    """--warmup_steps 0 was replaced by 5 epochs of warmup, --optim by the package's own AdamW, and the logged
    learning_rate was the embeddings' (the first, most decayed group's: 0.01 * 0.5^3 here)."""
    payload = _cli_run(checkpoint, tmp_path, "--learning_rate", "0.01", "--warmup_steps", "0", "--lr_scheduler_type",
                       "constant_with_warmup", "--optim", "sgd", "--layer_decay", "0.5", "--max_steps", "2",
                       "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "2")
    saved = tmp_path / "out" / "seed-42" / "checkpoint-2"
    logged = [entry["learning_rate"] for entry in json.loads((saved / "trainer_state.json").read_text())["log_history"]
              if "learning_rate" in entry]
    assert logged == [0.01, 0.01]  # no warmup, and the head's (peak) lr
    optimizer = torch.load(saved / "optimizer.pt")
    assert not any("exp_avg" in state for state in optimizer["state"].values())  # SGD, not AdamW
    assert all("momentum" in group and "betas" not in group for group in optimizer["param_groups"])
    # layer decay still applies under SGD: head 0.01, two layers, embeddings 0.01 * 0.5^3
    assert sorted({round(g["lr"], 12) for g in optimizer["param_groups"]}) == [0.00125, 0.0025, 0.005, 0.01]
    recipe = payload["recipe"]
    assert (recipe["optim"], recipe["learning_rate"], recipe["warmup_steps"]) == ("sgd", 0.01, 0)
    assert recipe["base_learning_rate"] is None and recipe["warmup_epochs"] is None  # not what this run used


def test_a_warmup_share_is_recorded_as_the_steps_the_trainer_warms_up(checkpoint, tmp_path):
    # --warmup_steps 0.5 is a share of the run for the Trainer (2 of 4 steps), not half a step
    payload = _cli_run(checkpoint, tmp_path, "--max_steps", "4", "--warmup_steps", "0.5", "--learning_rate", "1e-2")
    assert payload["recipe"]["warmup_steps"] == 2
    assert (payload["recipe"]["max_steps"], payload["recipe"]["epochs"]) == (4, None)


def test_the_recipe_records_the_learning_rate_and_warmup_it_computed(checkpoint, tmp_path):
    payload = _cli_run(checkpoint, tmp_path, "--max_steps", "1", "--base_learning_rate", "2e-3", "--warmup_epochs", "2")
    recipe = payload["recipe"]
    # lr = base lr * batch 4 / 256; 24 training images in batches of 4: 6 steps an epoch, 12 of warmup
    assert recipe["learning_rate"] == pytest.approx(2e-3 * 4 / 256) and recipe["warmup_steps"] == 12
    assert (recipe["optim"], recipe["base_learning_rate"], recipe["warmup_epochs"]) == ("adamw_torch", 2e-3, 2.0)


def _distilled_deit(tmp_path):
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    path = tmp_path / "deit"
    DeiTForImageClassificationWithTeacher(DeiTConfig(**TINY, num_labels=3)).save_pretrained(path)
    return ["--model_name_or_path", str(path)]


def _start_inside_output(tmp_path):
    from tests.conftest import save_tiny_checkpoint

    return ["--model_name_or_path", str(save_tiny_checkpoint(tmp_path / "out" / "seed-0"))]


# bad input to run_fine_tune.py, also a source of docs/TROUBLESHOOTING.md (`python -m tests.bad_input_table`);
# stage "arguments": refused before the data is read or a weight is built
CASES = [
    dict(id="start-checkpoint-inside-output", input="`--model_name_or_path` a checkpoint inside `--output_dir` "
         "(e.g. an earlier seed's `seed-0/`)", setup=_start_inside_output,
         message="is --model_name_or_path .* or a folder above it: the output would replace its source",
         stage="arguments"),
    dict(id="eval-strategy", input="`--eval_strategy epoch` (or steps)", args=["--eval_strategy", "epoch"],
         message="--eval_strategy epoch is not supported by run_fine_tune.py: it passes the Trainer no evaluation "
                 "set during training", stage="arguments"),
    dict(id="load-best-model", input="`--load_best_model_at_end`", args=["--load_best_model_at_end"],
         message="--load_best_model_at_end is not supported by run_fine_tune.py", stage="arguments"),
    dict(id="load-best-model-with-eval", input="`--load_best_model_at_end` with matching eval / save strategies",
         args=["--eval_strategy", "epoch", "--save_strategy", "epoch", "--load_best_model_at_end"],
         message="--eval_strategy epoch is not supported", stage="arguments"),
    dict(id="optim-without-groups", input="`--optim galore_adamw` (GaLore, APOLLO, LOMO, AdaLOMO)",
         args=["--optim", "galore_adamw"], message="--optim galore_adamw builds its own parameter groups.*layer-wise "
                                                   "lr decay", stage="arguments"),
    dict(id="optim-lomo", input="`--optim lomo`", args=["--optim", "lomo"],
         message="--optim lomo builds its own parameter groups", stage="arguments"),
    dict(id="warmup-twice", input="`--warmup_steps` and `--warmup_epochs` together",
         args=["--warmup_steps", "0", "--warmup_epochs", "2"], message="set the warmup two ways: pass one",
         stage="arguments"),
    dict(id="learning-rate-twice", input="`--learning_rate` and `--base_learning_rate` together",
         args=["--learning_rate", "1e-3", "--base_learning_rate", "5e-4"],
         message="set the learning rate two ways.*pass one", stage="arguments"),
    dict(id="auto-batch-size", input="`--auto_find_batch_size`", args=["--auto_find_batch_size"],
         message="--auto_find_batch_size is not supported", stage="arguments"),
    dict(id="prediction-loss-only", input="`--prediction_loss_only`", args=["--prediction_loss_only"],
         message="--prediction_loss_only would leave the evaluation without the logits", stage="arguments"),
    dict(id="distilled-deit", input="`--model_name_or_path` a distilled DeiT (model type `deit`)", setup=_distilled_deit,
         message=r"is a distilled DeiT \(model type 'deit'.*Supported: vit_mae, vit, vit_msn", stage="arguments"),
]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bad_input_is_refused_before_the_data_is_read(tmp_path, monkeypatch, case):
    import run_fine_tune
    from modeling_attg_mae.evaluation import session

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the bad input was refused")

    monkeypatch.setattr(session, "EvaluationData", no_data)
    argv = ["--model_name_or_path", "x", "--output_dir", str(tmp_path / "out"), *case.get("args", []),
            *(case["setup"](tmp_path) if "setup" in case else [])]
    with pytest.raises(ValueError, match=case["message"]):
        run_fine_tune.main(argv)


def _framed_image(label: int, rng) -> Image.Image:
    """96x32: the centre third in the class's colour, the outer thirds in the next class's. The evaluation's center
    crop sees the class colour; an image processor that resizes the whole image sees mostly the other one."""
    from tests.conftest import COLOURS

    pixels = np.empty((32, 96, 3))
    pixels[:] = COLOURS[(label + 1) % 3]
    pixels[:, 32:64] = COLOURS[label]
    return Image.fromarray(np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8))


def test_the_stock_pipeline_on_a_saved_seed_gives_the_reported_accuracy(checkpoint, tmp_path):
    """The saved processor squashed the image (ViTImageProcessor) while the evaluation resized and center-cropped:
    on these images the pipeline was 0 % where the run reported 100 %."""
    import datasets
    import transformers

    rng = np.random.default_rng(0)
    dataset = colour_dataset()
    labels = [c for c in range(3) for _ in range(6)]
    dataset["validation"] = datasets.Dataset.from_dict(
        {"image": [_framed_image(c, rng) for c in labels], "label": labels}, features=dataset["train"].features)
    del dataset["validation_shifted"]
    payload = _run(checkpoint, tmp_path, dataset=dataset, model={"global_pool": False, "drop_path": 0.0},
                   fine_tune={"mixup": 0, "cutmix": 0, "rand_augment": False, "random_erase": 0}, max_steps=20,
                   learning_rate=1e-2, warmup_steps=1, per_device_train_batch_size=8)
    reported = next(r["top1"] for r in payload["results"] if r["seed"] == 42)
    assert reported == 100.0  # the run learnt the colours: a processor that does not crop would disagree
    saved = tmp_path / "out" / "seed-42"
    # the saved processor's class, by its PIL backend (AutoImageProcessor of transformers < 5.2x asks for torchvision)
    kind = json.loads((saved / "preprocessor_config.json").read_text())["image_processor_type"]
    processor = getattr(transformers, f"{kind}Pil").from_pretrained(saved)
    classify = transformers.pipeline("image-classification", model=str(saved), image_processor=processor, device="cpu")
    predicted = [classify(image, top_k=1)[0]["label"] for image in dataset["validation"]["image"]]
    assert 100.0 * np.mean([p == "rgb"[label] for p, label in zip(predicted, labels)]) == reported


def _seed_runs(checkpoint, tmp_path, **fine_tune):
    return _run(checkpoint, tmp_path, max_steps=2, fine_tune={"overwrite_output_dir": False, **fine_tune},
                resume_from_checkpoint="last" if (tmp_path / "out").exists() else None)


def test_resume_refuses_a_finished_seed_of_another_subset(checkpoint, tmp_path):
    """A "50 %, 2 seeds" summary averaged a seed trained on 25 % (read back from seed_results.json) with one on 50 %."""
    _seed_runs(checkpoint, tmp_path, train_fraction=0.25, seeds=[0])
    with pytest.raises(ValueError, match=r"finished seed in .*seed-0 was fine-tuned with other arguments than this "
                                         r"run's: .*train_fraction 0.25 there, 0.5 now"):
        _seed_runs(checkpoint, tmp_path, train_fraction=0.5, seeds=[0, 1])
    assert not (tmp_path / "out" / "seed-1").exists()  # refused before any training
    again = _seed_runs(checkpoint, tmp_path, train_fraction=0.25, seeds=[0, 1])  # the same arguments: reused
    assert [r["seed"] for r in again["results"] if r["split"] == "validation"] == [0, 1, None]
    results = tmp_path / "out" / "seed-0" / "seed_results.json"
    results.write_text(json.dumps({"results": json.loads(results.read_text())["results"]}))  # an older version's file
    with pytest.raises(ValueError, match="finished seed in .*seed-0 has no record of the arguments it was made with"):
        _seed_runs(checkpoint, tmp_path, train_fraction=0.25, seeds=[0, 1])


def test_resume_refuses_a_finished_seed_of_another_start_checkpoint(checkpoint, tmp_path):
    """With another --model_name_or_path, the first checkpoint's seed results were written into the second's card."""
    import shutil

    from tests.conftest import EVAL_CHECKPOINT_OVERRIDES, save_tiny_checkpoint

    first = tmp_path / "start"
    shutil.copytree(checkpoint, first)
    _seed_runs(first, tmp_path, seeds=[0])
    other = save_tiny_checkpoint(tmp_path / "other", seed=1, **EVAL_CHECKPOINT_OVERRIDES)
    with pytest.raises(ValueError, match=r"other arguments than this run's: checkpoint .*model_name_or_path"):
        _seed_runs(other, tmp_path, seeds=[0])
    # the same folder, other weights in it (retrained in place): refused by the weights' hash
    shutil.copy(other / "model.safetensors", first / "model.safetensors")
    with pytest.raises(ValueError, match=r"other arguments than this run's: checkpoint \{.*'weights'"):
        _seed_runs(first, tmp_path, seeds=[0])


def test_resume_continues_a_checkpoint_only_of_the_same_arguments(checkpoint, tmp_path):
    """An interrupted seed's checkpoint-N was resumed whatever the new run's arguments."""
    _run(checkpoint, tmp_path, max_steps=2, save_strategy="steps", save_steps=1, fine_tune={"train_fraction": 0.5})
    seed_dir = tmp_path / "out" / "seed-42"
    for name in ("seed_results.json", "model.safetensors"):  # as a kill after checkpoint-2 leaves the seed
        (seed_dir / name).unlink()
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint-2 was fine-tuned with other arguments than this "
                                         r"run's: .*max_steps 2 there, 4 now"):
        _run(checkpoint, tmp_path, max_steps=4, save_strategy="steps", save_steps=1, resume_from_checkpoint="last",
             fine_tune={"train_fraction": 0.5})
    with pytest.raises(ValueError, match=r"other arguments .*train_fraction 0.5 there, 0.25 now"):
        _run(checkpoint, tmp_path, max_steps=2, save_strategy="steps", save_steps=1,
             resume_from_checkpoint=str(seed_dir / "checkpoint-2"), fine_tune={"train_fraction": 0.25})
    (seed_dir / "seed_arguments.json").unlink()  # a folder of an older version: what it was made with is unknown
    with pytest.raises(ValueError, match="has no record of the arguments it was made with"):
        _run(checkpoint, tmp_path, max_steps=2, save_strategy="steps", save_steps=1, resume_from_checkpoint="last",
             fine_tune={"train_fraction": 0.5})


def test_overwriting_a_seed_folder_removes_the_earlier_runs_checkpoints(checkpoint, tmp_path):
    """Else a kill of the new run and `--resume_from_checkpoint last` would take the old run's checkpoint-N."""
    _run(checkpoint, tmp_path, max_steps=3, save_strategy="steps", save_steps=1, fine_tune={"train_fraction": 0.5})
    _run(checkpoint, tmp_path, max_steps=1, save_strategy="no", fine_tune={"train_fraction": 0.25, "overwrite_output_dir": True})
    seed_dir = tmp_path / "out" / "seed-42"
    assert not list(seed_dir.glob("checkpoint-*"))
    assert json.loads((seed_dir / "seed_arguments.json").read_text())["train_fraction"] == 0.25


def test_push_to_hub_sends_each_seed_with_its_processor_card_and_results(checkpoint, tmp_path, local_hub):
    import yaml
    from huggingface_hub import ModelCard, parse_eval_result_entries

    payload = _run(checkpoint, tmp_path, fine_tune={"train_fraction": 0.5, "seeds": [0, 1]},
                   model={"hub_base_model": "you/attg-run"}, push_to_hub=True, hub_model_id="you/tuned",
                   save_strategy="steps", save_steps=2)
    assert set(payload["pushed"]) == {0, 1} and set(local_hub.repos) == {"you/tuned-seed-0", "you/tuned-seed-1"}
    repo = local_hub.repos["you/tuned-seed-1"]
    (results_file,) = [name for name in repo if name.startswith(".eval_results/")]
    # no checkpoint-N (save_steps 2 of 3 steps wrote one locally) nor TensorBoard logs
    assert set(repo) == {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "training_args.bin",
                         "seed_results.json", "seed_arguments.json", results_file}
    assert (tmp_path / "out" / "seed-1" / "checkpoint-2").is_dir()
    card = ModelCard(repo["README.md"].decode())
    assert card.data.base_model == "you/attg-run" and card.data.pipeline_tag == "image-classification"
    seed_rows = {r["split"]: r for r in payload["results"] if r["seed"] == 1}
    index = {(r.dataset_split, r.metric_config): r.metric_value for r in card.data.eval_results}
    assert index[("validation", "fine-tune-50pct-top1-mean")] == round(seed_rows["validation"]["top1"], 2)
    for text in ("| layer_decay |", "50% of the labels of the train split", "seed 1", "none is picked by its score"):
        assert text in card.text, text
    entries = parse_eval_result_entries(yaml.safe_load(repo[results_file].decode()))
    assert {(e.task_id, e.value) for e in entries} == {(f"{s}/{c}", v) for (s, c), v in index.items()}


def test_push_from_a_local_folder_needs_the_base_models_hub_id(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="pass --hub_base_model"):
        parse_fine_tune_arguments(["--model_name_or_path", str(checkpoint), "--output_dir", str(tmp_path / "o"),
                                   "--push_to_hub", "--hub_model_id", "you/tuned"])
