"""modeling_attg_mae.export: the ordered-token ViTModel export (pipeline, Hub widget) and the timm export.

`CASES` (bad input to `python -m modeling_attg_mae.export`) is also a source of docs/TROUBLESHOOTING.md
(`python -m tests.bad_input_table`). Stage "arguments": refused before any weight is loaded.
"""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModel, ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining, ViTModel, pipeline

import modeling_attg_mae.export as export
from modeling_attg_mae import extract_features, save_for_inference_and_pretraining
from modeling_attg_mae.export import export_encoder, hub_repo_id, main, timm_state_dict
from tests.conftest import GRID, IMAGE, PATCH, official_mae_sincos, tiny_config, tiny_model, tiny_pretrain_args

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def save_checkpoint(folder, model, processor=True):
    """A checkpoint folder as run_pretrain.py writes it: vit_mae weights (mask_ratio 0) + an image processor."""
    save_for_inference_and_pretraining(model, folder)
    if processor:
        ViTImageProcessor(size={"height": IMAGE, "width": IMAGE}, image_mean=MEAN, image_std=STD,
                          resample=3).save_pretrained(folder)
    return folder


@pytest.fixture
def ours(tmp_path):
    model = tiny_model(seed=3)
    return model, save_checkpoint(tmp_path / "ckpt", model)


def noise_image(seed=0, size=(40, 36)):
    # every patch differs from every other one: a shuffled patch order cannot go unnoticed (a flat image would hide it)
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_pipeline_gives_every_token_in_order_identical_on_every_call(ours):
    model, checkpoint = ours
    encoder = export_encoder(checkpoint)
    assert encoder == checkpoint / "encoder"
    image = noise_image()
    extractor = pipeline("image-feature-extraction", model=str(encoder), device="cpu")
    first, second = torch.tensor(extractor(image)), torch.tensor(extractor(image))
    assert first.shape == (1, 1 + GRID * GRID, 32)
    assert torch.equal(first, second)
    pixels = ViTImageProcessor.from_pretrained(checkpoint)(image, return_tensors="pt").pixel_values
    expected = extract_features(model, pixels, "tokens")  # (1, 1 + N, D): CLS, then the patches row-major
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=0)
    # pool=True: the identity pooler gives the CLS feature
    torch.testing.assert_close(torch.tensor(extractor(image, pool=True)), expected[:, 0], atol=1e-5, rtol=0)
    # the reason for the export: the same pipeline on the vit_mae checkpoint shuffles the patches (CLS is right)
    stock = [torch.tensor(pipeline("image-feature-extraction", model=str(checkpoint), device="cpu")(image))
             for _ in range(2)]
    torch.testing.assert_close(stock[0][:, 0], expected[:, 0], atol=1e-5, rtol=0)
    assert not torch.allclose(stock[0][:, 1:], expected[:, 1:], atol=1e-3)


def test_export_loads_cleanly_with_real_position_embeddings(ours):
    model, checkpoint = ours
    encoder, info = AutoModel.from_pretrained(export_encoder(checkpoint), output_loading_info=True)
    assert type(encoder) is ViTModel and encoder.config.model_type == "vit"
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    position = encoder.embeddings.position_embeddings[0].detach()
    raw = load_file(checkpoint / "model.safetensors")
    (key,) = [k for k in raw if k.endswith("embeddings.position_embeddings") and "decoder" not in k]
    assert torch.equal(position, raw[key][0])  # the file's values, not a fresh (zero) table
    np.testing.assert_allclose(position.numpy(), official_mae_sincos(32, GRID), atol=1e-6)
    assert encoder.embeddings.position_embeddings.abs().sum() > 1
    for name, tensor in model.vit.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], tensor), name


def test_patch_order_is_row_major(tmp_path):
    # no transformer layer: token i depends on patch i alone, so changing one patch moves exactly one token
    model = tiny_model(num_hidden_layers=0)
    encoder = ViTModel.from_pretrained(export_encoder(save_checkpoint(tmp_path / "ckpt", model))).eval()
    pixels = torch.randn(1, 3, IMAGE, IMAGE)
    changed = pixels.clone()
    row, col = 1, 2
    changed[:, :, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH] += 3.0
    with torch.no_grad():
        moved = (encoder(changed).last_hidden_state - encoder(pixels).last_hidden_state).abs().sum(-1)[0] > 1e-4
    assert moved.nonzero().flatten().tolist() == [1 + row * GRID + col]


def test_interpolate_pos_encoding_at_another_resolution(ours):
    model, checkpoint = ours
    encoder = ViTModel.from_pretrained(export_encoder(checkpoint)).eval()
    pixels = torch.randn(2, 3, 48, 40)  # 6 x 5 patches instead of 4 x 4
    with torch.no_grad():
        tokens = encoder(pixels, interpolate_pos_encoding=True).last_hidden_state
    assert tokens.shape == (2, 1 + 6 * 5, 32)
    expected = extract_features(model, pixels, "tokens", interpolate_pos_encoding=True)
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=0)


def test_a_stock_vitmae_checkpoint_exports(tmp_path, caplog):
    # stock ViTMAEForPreTraining built from a config: transformers 5.24 leaves its position embeddings at zero;
    # they are exported as they are (the features must stay the source's), with a warning that says so
    torch.manual_seed(0)
    stock_config = ViTMAEConfig(**{k: v for k, v in tiny_config().to_dict().items() if not k.startswith("attg_")})
    stock = ViTMAEForPreTraining(stock_config).eval()
    stock.save_pretrained(tmp_path / "stock")
    ViTImageProcessor(size={"height": IMAGE, "width": IMAGE}).save_pretrained(tmp_path / "stock")
    with caplog.at_level(logging.WARNING, logger="modeling_attg_mae.export"):
        encoder = ViTModel.from_pretrained(export_encoder(tmp_path / "stock", tmp_path / "out")).eval()
    assert any("all-zero position embeddings" in r.getMessage() for r in caplog.records)
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).last_hidden_state, extract_features(stock, pixels, "tokens"),
                                   atol=1e-5, rtol=0)


def test_overwrite_replaces_only_a_previous_export_and_a_failure_keeps_it(ours, tmp_path):
    model, checkpoint = ours
    encoder = export_encoder(checkpoint)
    (encoder / "stale.txt").write_text("from an earlier export")
    weights = (encoder / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already exists.*--overwrite_output_dir"):
        export_encoder(checkpoint)
    # a failing export (here: a processor for another image size) leaves the previous one untouched
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "proc64")
    with pytest.raises(ValueError, match="resizes to \\(64, 64\\).*takes \\(32, 32\\)"):
        export_encoder(checkpoint, overwrite=True, image_processor=tmp_path / "proc64")
    assert (encoder / "stale.txt").is_file() and (encoder / "model.safetensors").read_bytes() == weights
    assert [p.name for p in checkpoint.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    export_encoder(checkpoint, overwrite=True)
    assert not (encoder / "stale.txt").exists() and (encoder / "model.safetensors").is_file()


def test_timm_state_dict_fuses_qkv_and_renames(ours):
    model, _ = ours
    state = timm_state_dict(model.vit)
    src = model.vit.state_dict()
    assert set(state) == {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
                          "norm.bias"} | {f"blocks.{i}.{name}" for i in range(2) for name in (
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
        "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")}
    qkv = state["blocks.1.attn.qkv.weight"]
    assert qkv.shape == (96, 32) and state["pos_embed"].shape == (1, 1 + GRID * GRID, 32)
    # timm splits qkv as reshape(B, N, 3, heads, head_dim): rows [0, D) are q, [D, 2D) k, [2D, 3D) v
    for index, name in enumerate("qkv"):
        assert torch.equal(qkv[32 * index:32 * (index + 1)], src[f"layers.1.attention.{name}_proj.weight"])
        assert torch.equal(state["blocks.1.attn.qkv.bias"][32 * index:32 * (index + 1)],
                           src[f"layers.1.attention.{name}_proj.bias"])
    assert torch.equal(state["norm.weight"], src["layernorm.weight"])


def _timm_vit_forward_features(state, pixels, num_heads, patch, eps):
    """timm's VisionTransformer.forward_features (class token, no reg tokens, pre-norm blocks, final norm), written
    from timm/models/vision_transformer.py and timm/layers/attention.py with nothing but the timm key names."""
    F = torch.nn.functional
    x = F.conv2d(pixels, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)  # (B, N, D), patches row-major
    x = torch.cat([state["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + state["pos_embed"]
    batch, tokens, dim = x.shape
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        w = {k[len(f"blocks.{i}."):]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(x, (dim,), w["norm1.weight"], w["norm1.bias"], eps)
        qkv = F.linear(h, w["attn.qkv.weight"], w.get("attn.qkv.bias"))
        q, k, v = qkv.reshape(batch, tokens, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + F.linear(h, w["attn.proj.weight"], w["attn.proj.bias"])
        h = F.layer_norm(x, (dim,), w["norm2.weight"], w["norm2.bias"], eps)
        x = x + F.linear(F.gelu(F.linear(h, w["mlp.fc1.weight"], w["mlp.fc1.bias"])), w["mlp.fc2.weight"], w["mlp.fc2.bias"])
    return F.layer_norm(x, (dim,), state["norm.weight"], state["norm.bias"], eps)


def test_timm_weights_in_timms_forward_give_the_source_features(ours):
    # without timm installed (the test below is skipped then), timm's forward written out over the exported file:
    # a wrong q/k/v order, head split, position table or key would change the tokens
    model, checkpoint = ours
    folder = export_encoder(checkpoint, format="timm")
    config = json.loads((folder / "config.json").read_text())
    pixels = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = _timm_vit_forward_features(load_file(folder / "model.safetensors"), pixels,
                                            config["model_args"]["num_heads"], config["model_args"]["patch_size"],
                                            config["attg_mae"]["layer_norm_eps"])
        expected = extract_features(model, pixels, "tokens")
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=0)


def test_timm_folder_written_without_timm(ours):
    _, checkpoint = ours
    folder = export_encoder(checkpoint, format="timm")
    assert folder == checkpoint / "encoder-timm"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"] == {"img_size": [32, 32], "patch_size": 8, "in_chans": 3, "embed_dim": 32, "depth": 2,
                                    "num_heads": 2, "mlp_ratio": 2.0, "qkv_bias": True, "class_token": True,
                                    "global_pool": "token", "num_classes": 0}
    assert config["pretrained_cfg"]["mean"] == MEAN and config["pretrained_cfg"]["std"] == STD
    # timm's resolve_data_config reads crop_pct and crop_mode: resize the whole image to the input size, as the HF
    # processor does (crop_mode "center", timm's default, would crop a non-square image)
    assert (config["pretrained_cfg"]["crop_pct"], config["pretrained_cfg"]["crop_mode"]) == (1.0, "squash")
    assert config["attg_mae"]["layer_norm_eps"] == 1e-12
    assert set(load_file(folder / "model.safetensors")) == set(timm_state_dict(ours[0].vit))


def test_timm_create_model_gives_the_same_features(ours):
    timm = pytest.importorskip("timm", reason="timm is not installed (it needs torchvision; see README, 'Use the "
                                               "encoder'); the key mapping is checked without it above")
    from functools import partial

    model, checkpoint = ours
    folder = export_encoder(checkpoint, format="timm")
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    expected = extract_features(model, pixels, "tokens")
    vit = timm.create_model(f"local-dir:{folder}", pretrained=True,
                            norm_layer=partial(timm.layers.LayerNorm, eps=1e-12)).eval()
    with torch.no_grad():
        torch.testing.assert_close(vit.forward_features(pixels), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(vit(pixels), expected[:, 0], atol=1e-5, rtol=0)  # global_pool "token": CLS
    # by name with explicit dimensions, from the safetensors file alone
    by_name = timm.create_model("vit_small_patch16_224", img_size=IMAGE, patch_size=PATCH, embed_dim=32, depth=2,
                                num_heads=2, mlp_ratio=2.0, num_classes=0, global_pool="token",
                                norm_layer=partial(timm.layers.LayerNorm, eps=1e-12)).eval()
    by_name.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(by_name(pixels), expected[:, 0], atol=1e-5, rtol=0)
    assert list(timm.data.resolve_data_config({}, model=vit)["mean"]) == MEAN  # the folder's preprocessing


def test_cli_and_push_name_the_repos(ours, monkeypatch):
    import modeling_attg_mae.hub as hub

    _, checkpoint = ours
    uploads = []
    monkeypatch.setattr(hub, "_upload", lambda folder, repo_id, private, message, ignore_patterns=None:
                        uploads.append((folder.name, repo_id, ignore_patterns)) or f"https://hf.co/{repo_id}")
    assert hub_repo_id("you/run") == "you/run-encoder" and hub_repo_id("you/run", "timm") == "you/run-timm"
    folder = main(["--checkpoint", str(checkpoint), "--push_to_hub", "--hub_model_id", "you/run"])
    assert uploads == [("encoder", "you/run-encoder", None)]
    card = (folder / "README.md").read_text()
    assert 'pipeline("image-feature-extraction", model="you/run-encoder")' in card and "base_model: you/run" in card
    # the pre-training push: the vit_mae repo without a second copy of the encoder, the encoder to its own repo
    uploads.clear()
    hub.push_checkpoint_to_hub(checkpoint, "you/run")
    assert uploads == [("ckpt", "you/run", ["encoder/*"]), ("encoder", "you/run-encoder", None)]


def test_run_pretrain_writes_the_encoder(tmp_path):
    from modeling_attg_mae.pretraining import parse_arguments, run
    from modeling_attg_mae.features import extract_features as extract

    run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
                                   "--num_pictures", "0")))
    out = tmp_path / "out"
    image = noise_image(1)
    tokens = torch.tensor(pipeline("image-feature-extraction", model=str(out / "encoder"), device="cpu")(image))
    pixels = ViTImageProcessor.from_pretrained(out)(image, return_tensors="pt").pixel_values
    from transformers import ViTMAEModel

    expected = extract(ViTMAEModel.from_pretrained(out).eval(), pixels, "tokens")
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=0)


# --- bad input -------------------------------------------------------------------------------------------------

def _vit_checkpoint(tmp_path):
    from transformers import ViTConfig

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=IMAGE, patch_size=PATCH)).save_pretrained(tmp_path / "vit")
    return ["--checkpoint", str(tmp_path / "vit")]


def _ours(tmp_path):
    return ["--checkpoint", str(save_checkpoint(tmp_path / "ckpt", tiny_model()))]


def _existing_output(tmp_path):
    (tmp_path / "ckpt" / "encoder").mkdir(parents=True)
    (tmp_path / "ckpt" / "encoder" / "notes.txt").write_text("mine")
    return _ours(tmp_path)


def _someone_elses_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    return _ours(tmp_path) + ["--output_dir", str(tmp_path / "mine"), "--overwrite_output_dir"]


def _no_processor(tmp_path):
    return ["--checkpoint", str(save_checkpoint(tmp_path / "checkpoint-4", tiny_model(), processor=False))]


def _missing_weight(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "ckpt", tiny_model())
    weights = load_file(checkpoint / "model.safetensors")
    (key,) = [k for k in weights if k.endswith("layer.1.output.dense.weight") and not k.startswith("decoder")]
    del weights[key]
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    return ["--checkpoint", str(checkpoint)]


CASES = [
    dict(id="not-vit-mae", input="`--checkpoint` pointing at a ViT (or any non-vit_mae) checkpoint",
         setup=_vit_checkpoint, message="is a 'vit' checkpoint; the encoder export converts vit_mae", stage="arguments"),
    dict(id="missing-folder", input="`--checkpoint ./no/such/folder`", args=["--checkpoint", "./no/such/folder"],
         message="--checkpoint './no/such/folder' does not exist", stage="arguments"),
    dict(id="existing-output", input="an existing `--output_dir` (default `<checkpoint>/encoder`) without "
         "`--overwrite_output_dir`", setup=_existing_output, message="already exists.*--overwrite_output_dir",
         stage="arguments"),
    dict(id="overwrite-foreign-folder", input="`--overwrite_output_dir` onto a folder that is not an encoder export",
         setup=_someone_elses_folder, message="holds something other than an encoder export", stage="arguments"),
    dict(id="output-is-checkpoint", input="`--output_dir` equal to the checkpoint (or a folder above it)",
         setup=lambda tmp_path: _ours(tmp_path) + ["--output_dir", str(tmp_path), "--overwrite_output_dir"],
         message="would replace its source", stage="arguments"),
    dict(id="bad-format", input="`--format onnx`", setup=lambda tmp_path: _ours(tmp_path) + ["--format", "onnx"],
         message="--format must be one of.*'onnx'", stage="arguments"),
    dict(id="push-without-id", input="`--push_to_hub` without `--hub_model_id`",
         setup=lambda tmp_path: _ours(tmp_path) + ["--push_to_hub"], message="--push_to_hub needs --hub_model_id",
         stage="arguments"),
    dict(id="no-image-processor", input="a Trainer `checkpoint-N` (no preprocessor_config.json)",
         setup=_no_processor, message="has no image processor.*--image_processor", stage="arguments"),
    dict(id="missing-encoder-weight", input="a checkpoint whose file lacks an encoder weight",
         setup=_missing_weight, message="encoder weights not in the file.*missing_keys", stage="weights"),
]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bad_input_is_refused_with_a_message_that_names_it(tmp_path, monkeypatch, case):
    argv = list(case.get("args", [])) + (case["setup"](tmp_path) if "setup" in case else [])
    if case["stage"] == "arguments":
        def fail(*args, **kwargs):
            raise AssertionError("weights were loaded before the bad input was refused")

        monkeypatch.setattr(export, "load_source_encoder", fail)
    with pytest.raises(ValueError, match=case["message"]):
        main(argv)
    assert not list(tmp_path.rglob("encoder/model.safetensors"))


@pytest.mark.parametrize("foreign", ["vit_classifier", "vit_model", "timm_folder"])
def test_overwrite_never_deletes_a_foreign_vit_or_timm_folder(tmp_path, monkeypatch, foreign):
    # a fine-tuned ViT classifier, a DINO-style ViTModel (tanh pooler) and a downloaded timm model all have a ViT or
    # timm config.json; none of them is an export, so --overwrite_output_dir must refuse them, not delete them
    from transformers import ViTConfig, ViTForImageClassification

    import modeling_attg_mae.hub as hub

    target = tmp_path / "theirs"
    vit_config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           image_size=IMAGE, patch_size=PATCH)
    if foreign == "vit_classifier":
        ViTForImageClassification(vit_config).save_pretrained(target)
    elif foreign == "vit_model":
        ViTModel(vit_config).save_pretrained(target)
    else:
        target.mkdir()
        (target / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_224", "num_classes": 0}))
    (target / "README.md").write_text("my card")
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(ValueError, match="holds something other than an encoder export"):
        main(_ours(tmp_path) + ["--output_dir", str(target), "--overwrite_output_dir"])
    assert sorted(p.name for p in target.iterdir()) == before and (target / "README.md").read_text() == "my card"
    assert export.export_format_of(target) is None
    # and the Hub push neither rewrites its card nor sends it to an encoder repo
    monkeypatch.setattr(hub, "_upload", lambda *args, **kwargs: pytest.fail("a foreign folder was uploaded"))
    with pytest.raises(ValueError, match="is not an encoder export"):
        hub.push_encoder_to_hub(target, "you/theirs-encoder")
    assert (target / "README.md").read_text() == "my card"


def test_export_format_of_recognises_both_exports(ours):
    _, checkpoint = ours
    assert export.export_format_of(export_encoder(checkpoint)) == "hf"
    assert export.export_format_of(export_encoder(checkpoint, format="timm")) == "timm"
    assert export.export_format_of(checkpoint) is None  # the vit_mae checkpoint itself


def test_the_checkpoint_card_states_the_training_ratio_and_points_to_the_encoder(ours):
    from modeling_attg_mae.hub import render_model_card

    _, checkpoint = ours  # config.json: mask_ratio 0.0, attg_pretraining_mask_ratio 0.75
    text = render_model_card(checkpoint, object_discovery={}, temperature={}, training_hparams={}).text
    assert "random, ratio 0.75" in text and "ratio 0.0" not in text
    assert "`encoder/` folder" in text and "`mask_ratio=0.75` to `from_pretrained`" in text


def test_the_export_path_logs_no_torchvision_warning_and_saves_a_processor_both_backends_load(tmp_path):
    """transformers without torchvision warns once per process where `ViTImageProcessor` is named, so the export
    runs in its own process here (this module already named it). The saved type, "ViTImageProcessor", is the vit
    entry of AutoImageProcessor's map for both backends (torchvision: that class; PIL: ViTImageProcessorPil)."""
    import subprocess
    import sys

    from transformers import AutoImageProcessor
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    from tests.conftest import REPO, subprocess_env

    checkpoint = tmp_path / "ckpt"
    save_for_inference_and_pretraining(tiny_model(), checkpoint)
    # the processor as a run writes it (pretraining.card.run_image_processor), then the export CLI on the checkpoint
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from modeling_attg_mae.pretraining.card import "
            "run_image_processor as p; p(32, [0.5] * 3, [0.25] * 3).save_pretrained(sys.argv[2]); "
            "from modeling_attg_mae.export import main; main(['--checkpoint', sys.argv[2]])")
    result = subprocess.run([sys.executable, "-c", code, str(REPO), str(checkpoint)], capture_output=True, text=True,
                            env=subprocess_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exported the hf encoder" in result.stdout + result.stderr  # the log was captured
    assert "torchvision" not in result.stdout + result.stderr
    for folder in (checkpoint, checkpoint / "encoder"):
        saved = json.loads((folder / "preprocessor_config.json").read_text())
        assert saved["image_processor_type"] == "ViTImageProcessor"
        try:
            processor = AutoImageProcessor.from_pretrained(folder)
        except ImportError as error:  # transformers 5.16's AutoImageProcessor needs torchvision for any backend
            assert "Torchvision" in str(error)
            from transformers import ViTImageProcessorPil

            processor = ViTImageProcessorPil.from_pretrained(folder)
        assert (dict(processor.size), list(processor.image_mean), processor.resample) == ({"height": 32, "width": 32}, [0.5] * 3, 3)
    assert IMAGE_PROCESSOR_MAPPING_NAMES["vit"] == {"torchvision": "ViTImageProcessor", "pil": "ViTImageProcessorPil"}
