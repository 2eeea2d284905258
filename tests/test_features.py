"""extract_features: masking off, patch order kept, the same API for ViTMAE, AttG, ViT and DINOv2."""

import pytest
import torch
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    ResNetConfig,
    ResNetModel,
    ViTConfig,
    ViTMAEModel,
    ViTModel,
)

from modeling_attg_mae import extract_features
from modeling_attg_mae.features import encode_tokens
from tests.conftest import GRID, IMAGE, PATCH, tiny_model


def test_features_are_deterministic_and_masking_is_restored():
    model = tiny_model()
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    a = extract_features(model, pixels, "cls")
    b = extract_features(model, pixels, "cls")
    assert torch.equal(a, b)  # masked inference would differ from call to call
    assert model.config.mask_ratio == 0.75
    tokens, prefix = encode_tokens(model, pixels)
    assert tokens.shape == (2, 1 + GRID * GRID, 32) and prefix == 1  # all patches, none masked
    assert torch.allclose(extract_features(model, pixels, "mean"), tokens[:, 1:].mean(1))
    both = extract_features(model, pixels, "cls+mean")
    assert both.shape == (2, 64) and torch.equal(both[:, :32], a)


def test_patch_order_is_kept():
    # With no transformer layer, token i depends on patch i alone: changing one patch moves exactly one token.
    model = tiny_model(num_hidden_layers=0)
    pixels = torch.randn(1, 3, IMAGE, IMAGE)
    changed = pixels.clone()
    row, col = 2, 1
    changed[:, :, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH] += 3.0
    before, _ = encode_tokens(model, pixels)
    after, _ = encode_tokens(model, changed)
    moved = ((after - before).abs().sum(-1) > 1e-4)[0].nonzero().flatten().tolist()
    assert moved == [1 + row * GRID + col]


def test_stock_vitmae_model_gives_the_same_features_as_our_wrapper():
    model = tiny_model()
    encoder = ViTMAEModel(model.config)
    encoder.load_state_dict(model.vit.state_dict())
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    assert torch.allclose(extract_features(encoder.eval(), pixels), extract_features(model, pixels))


def test_plain_vit_and_dinov2_registers():
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=IMAGE, patch_size=PATCH), add_pooling_layer=False).eval()
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    hidden = vit(pixels).last_hidden_state
    assert torch.allclose(extract_features(vit, pixels, "cls"), hidden[:, 0])
    assert torch.allclose(extract_features(vit, pixels, "mean"), hidden[:, 1:].mean(1))
    dino = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=IMAGE, patch_size=PATCH,
        num_register_tokens=4)).eval()
    hidden = dino(pixels).last_hidden_state
    assert hidden.shape[1] == 1 + 4 + GRID * GRID
    assert torch.allclose(extract_features(dino, pixels, "mean"), hidden[:, 5:].mean(1), atol=1e-6)


def test_bad_inputs():
    model = tiny_model()
    with pytest.raises(ValueError, match="pooling must be one of"):
        extract_features(model, torch.randn(1, 3, IMAGE, IMAGE), "max")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        extract_features(model, torch.randn(3, IMAGE, IMAGE))
    resnet = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1])).eval()
    with pytest.raises(ValueError, match="does not return ViT tokens"):
        extract_features(resnet, torch.randn(1, 3, IMAGE, IMAGE))


def test_distilled_deit_pools_its_patches_only(tmp_path):
    # DeiT puts a distillation token after CLS: tokens = CLS, distillation, 16 patches. Counting the prefix as CLS
    # (+ registers) pooled the distillation token as a patch; the model's own count (tokens - patches) drops it.
    from transformers import DeiTConfig, DeiTModel

    from modeling_attg_mae.model_source import load_encoder

    torch.manual_seed(0)
    config = DeiTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        image_size=IMAGE, patch_size=PATCH)
    DeiTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "deit")
    deit, info = load_encoder(str(tmp_path / "deit"))
    assert type(deit).__name__ == "DeiTModel" and info.model_type == "deit"
    for size, resized in (((IMAGE, IMAGE), False), ((48, 40), True)):  # 4x4 patches; 6x5 interpolated
        pixels = torch.randn(2, 3, *size)
        with torch.no_grad():
            hidden = deit(pixel_values=pixels, interpolate_pos_encoding=resized).last_hidden_state
        num_patches = (size[0] // PATCH) * (size[1] // PATCH)
        assert hidden.shape[1] == 2 + num_patches
        patches = hidden[:, 2:]  # by hand: the patch tokens only
        tokens, prefix = encode_tokens(deit, pixels, interpolate_pos_encoding=resized)
        assert prefix == 2
        mean = extract_features(deit, pixels, "mean", interpolate_pos_encoding=resized)
        assert torch.allclose(mean, patches.mean(1), atol=1e-6)
        assert not torch.allclose(mean, hidden[:, 1:].mean(1), atol=1e-3)  # what pooling the distillation token gives
        gem = extract_features(deit, pixels, "gem", interpolate_pos_encoding=resized)
        assert torch.allclose(gem, patches.clamp(min=1e-6).pow(3).mean(1).pow(1 / 3), atol=1e-6)
        assert torch.allclose(extract_features(deit, pixels, "cls", interpolate_pos_encoding=resized), hidden[:, 0])
        every = extract_features(deit, pixels, "tokens", interpolate_pos_encoding=resized)
        assert torch.allclose(every, torch.cat([hidden[:, :1], patches], dim=1))  # CLS + patches, as for every encoder
