"""Checkpoints are ordinary ViTMAE checkpoints: loaded in fresh processes by stock classes and remote code."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from modeling_attg_mae import AttGViTMAEConfig, AttGViTMAEForPreTraining
from tests.conftest import batch, tiny_config, tiny_model


def run_fresh(code: str, cwd) -> dict:
    """Run `code` in a new interpreter outside the repo (so only installed/saved code is importable)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_saved_folder_loads_with_stock_classes_without_missing_keys(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ckpt")
    files = sorted(os.listdir(tmp_path / "ckpt"))
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    pixels, attention, noise = batch()
    torch.save({"pixels": pixels, "noise": noise}, tmp_path / "inputs.pt")
    expected_hidden = model.vit(pixels, noise=noise).last_hidden_state
    stock_loss = ViTMAEForPreTraining(ViTMAEConfig(**{k: v for k, v in model.config.to_dict().items()
                                                      if not k.startswith("attg_")}))
    stock_loss.load_state_dict(model.state_dict())
    expected_loss = stock_loss.eval()(pixels, noise=noise).loss.item()
    out = run_fresh(f"""
        import json, torch
        from transformers import AutoModel, ViTMAEForPreTraining, ViTMAEModel
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        result = {{}}
        for cls in (ViTMAEModel, AutoModel, ViTMAEForPreTraining):
            model, info = cls.from_pretrained({str(tmp_path / "ckpt")!r}, output_loading_info=True)
            result[cls.__name__] = dict(type=type(model).__name__, missing=sorted(info["missing_keys"]),
                                        mismatched=sorted(info["mismatched_keys"]))
            model.eval()
            out = model(inputs["pixels"], noise=inputs["noise"])
            if cls is ViTMAEForPreTraining:
                result["loss"] = out.loss.item()
            else:
                result[cls.__name__]["hidden"] = out.last_hidden_state.flatten()[:50].tolist()
        print(json.dumps(result))
    """, cwd=tmp_path)
    assert out["ViTMAEModel"]["type"] == out["AutoModel"]["type"] == "ViTMAEModel"
    assert out["ViTMAEForPreTraining"]["type"] == "ViTMAEForPreTraining"
    for name in ("ViTMAEModel", "AutoModel", "ViTMAEForPreTraining"):
        assert out[name]["missing"] == [] and out[name]["mismatched"] == []
    for name in ("ViTMAEModel", "AutoModel"):
        assert torch.allclose(torch.tensor(out[name]["hidden"]), expected_hidden.flatten()[:50], atol=1e-5)
    # stock ViTMAEForPreTraining reads norm_pix_loss=True from our config: the same loss as the stock model here
    assert abs(out["loss"] - expected_loss) < 1e-5


def test_remote_code_route_loads_our_class_from_the_saved_folder(tmp_path):
    AttGViTMAEConfig.register_for_auto_class()
    AttGViTMAEForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    try:
        model = tiny_model(attg_temperature=0.6)
        model.save_pretrained(tmp_path / "ckpt")
    finally:  # the registration is class-global: do not leak it into other tests
        AttGViTMAEConfig._auto_class = AttGViTMAEForPreTraining._auto_class = None
    travelling = {"modeling_attg_mae.py", "configuration_attg_mae.py", "_dependencies.py"}  # + the version check
    assert travelling <= set(os.listdir(tmp_path / "ckpt"))
    pixels, attention, noise = batch()
    torch.save({"pixels": pixels, "attention": attention, "noise": noise}, tmp_path / "inputs.pt")
    expected = model(pixels, attention_map=attention, noise=noise).loss.item()
    out = run_fresh(f"""
        import json, torch
        from transformers import AutoModelForPreTraining
        model = AutoModelForPreTraining.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        loss = model(inputs["pixels"], attention_map=inputs["attention"], noise=inputs["noise"]).loss
        print(json.dumps(dict(cls=type(model).__name__, tau=model.attg_temperature.item(), loss=loss.item())))
    """, cwd=tmp_path)
    assert out["cls"] == "AttGViTMAEForPreTraining"
    assert abs(out["tau"] - 0.6) < 1e-7  # the non-persistent buffer is rebuilt from the config on load
    assert abs(out["loss"] - expected) < 1e-5


def test_our_class_continues_from_a_stock_vitmae_checkpoint(tmp_path):
    torch.manual_seed(0)
    stock_config = ViTMAEConfig(**{k: v for k, v in tiny_config().to_dict().items() if not k.startswith("attg_")})
    stock = ViTMAEForPreTraining(stock_config)
    stock.save_pretrained(tmp_path / "stock")
    model, info = AttGViTMAEForPreTraining.from_pretrained(tmp_path / "stock", output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert isinstance(model.config, AttGViTMAEConfig) and model.config.attg_guidance == "attg"
    assert model.attg_temperature.item() == 0.75
    for name, tensor in stock.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    pixels, attention, noise = batch()
    assert torch.isfinite(model(pixels, attention_map=attention, noise=noise).loss)


def test_exported_checkpoint_gives_all_tokens_to_stock_loaders_and_still_pretrains_at_75(tmp_path):
    from transformers import ViTMAEModel

    from modeling_attg_mae.modeling_attg_mae import save_for_inference_and_pretraining

    model = tiny_model()
    save_for_inference_and_pretraining(model, tmp_path / "export")
    assert model.config.mask_ratio == 0.75  # the live model is untouched
    saved = json.loads((tmp_path / "export" / "config.json").read_text())
    assert saved["mask_ratio"] == 0.0 and saved["attg_pretraining_mask_ratio"] == 0.75
    encoder = ViTMAEModel.from_pretrained(tmp_path / "export")
    assert encoder(torch.randn(1, 3, 32, 32)).last_hidden_state.shape == (1, 1 + 16, 32)
    again = AttGViTMAEForPreTraining.from_pretrained(tmp_path / "export")
    out = again(batch()[0], attention_map=batch()[1])
    assert out.mask.sum(1).tolist() == [12, 12, 12]


def _trainer(model, tmp_path):
    from transformers import TrainingArguments

    from modeling_attg_mae.pretraining import AttGTrainer

    return AttGTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[]))


def test_trainer_resume_and_best_model_load_every_tensor(tmp_path):
    """transformers 5.24's Trainer loads the raw file (legacy key names) with strict=False: every layer weight kept
    its fresh value. Our Trainer must restore all of them, for resume and for load_best_model_at_end alike."""
    saved = tiny_model(seed=0)
    saved.save_pretrained(tmp_path / "checkpoint-7")
    with open(tmp_path / "checkpoint-7" / "trainer_state.json", "w") as file:
        json.dump({"global_step": 7}, file)
    expected = saved.state_dict()
    for load in ("resume", "best"):
        model = tiny_model(seed=1)  # other weights everywhere
        trainer = _trainer(model, tmp_path)
        if load == "resume":
            trainer._load_from_checkpoint(str(tmp_path / "checkpoint-7"))
        else:
            trainer.state.best_model_checkpoint = str(tmp_path / "checkpoint-7")
            trainer._load_best_model()
        loaded = model.state_dict()
        assert loaded.keys() == expected.keys()
        for name, value in expected.items():
            assert torch.equal(loaded[name], value), (load, name)


def test_a_truncated_checkpoint_is_named(tmp_path):
    import pytest

    from modeling_attg_mae.checkpointing import load_checkpoint_weights

    tiny_model().save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # what a kill during the write leaves
    with pytest.raises(ValueError, match=f"cannot read the weights {weights}"):
        load_checkpoint_weights(tiny_model(), tmp_path / "ckpt")
