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
