"""The guided loss against a reference computed here by hand (numpy), for every guidance mode."""

import numpy as np
import pytest
import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from modeling_attg_mae import (
    GUIDANCE_MODES,
    AttGViTMAEConfig,
    AttGViTMAEForPreTraining,
    resample_attention_map,
)
from tests.conftest import GRID, IMAGE, N, PATCH, batch, official_mae_sincos, tiny_config, tiny_model



def reference_loss(pixels, logits, mask, attention, guidance, tau, quantile=0.1, norm_pix=True):
    """Paper Eq. 1-2 (and Table 10's variants), written from the formulas with numpy."""
    x = pixels.double().numpy()
    b, c = x.shape[:2]
    # patchify: (B, C, gh, p, gw, p) -> (B, gh, gw, p, p, C) -> (B, N, p*p*C), row-major patches
    target = x.reshape(b, c, GRID, PATCH, GRID, PATCH).transpose(0, 2, 4, 3, 5, 1).reshape(b, N, -1)
    if norm_pix:
        mean = target.mean(-1, keepdims=True)
        var = target.var(-1, ddof=1, keepdims=True)
        target = (target - mean) / np.sqrt(var + 1e-6)
    per_patch = ((logits.double().numpy() - target) ** 2).mean(-1)  # (B, N)
    m = attention.double().numpy().reshape(b, N)
    m_norm = np.zeros_like(m)
    for i in range(b):
        span = m[i].max() - m[i].min()
        m_norm[i] = (m[i] - m[i].min()) / span if span > 0 else 0.0
    if guidance == "attg":
        weights = np.exp(m_norm / tau)
    elif guidance == "inverted":
        weights = np.exp((1 - m_norm) / tau)
        weights[m_norm.max(1) == 0] = 1.0  # a flat map carries no information: weights 1
    elif guidance == "foreground_only":
        weights = np.stack([(row >= np.quantile(row, quantile)).astype(float) for row in m_norm])
    elif guidance == "background_only":
        weights = np.stack([(1 - row >= np.quantile(1 - row, quantile)).astype(float) for row in m_norm])
    else:
        weights = np.ones_like(m_norm)
    gamma = mask.double().numpy()
    return (per_patch * gamma * weights).sum() / gamma.sum(), weights


@pytest.mark.parametrize("guidance", [g for g in GUIDANCE_MODES if g != "input_masking"])
@pytest.mark.parametrize("tau", [0.5, 0.75, 1.3])
def test_loss_matches_hand_computed_reference(guidance, tau):
    model = tiny_model(attg_guidance=guidance)
    pixels, attention, noise = batch()
    out = model(pixels, attention_map=attention, noise=noise, temperature=tau)
    expected, weights = reference_loss(pixels, out.logits.detach(), out.mask, attention, guidance, tau)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(out.patch_weights.numpy(), weights, rtol=1e-5)
    assert out.patch_weights.shape == (3, N) and out.patch_weights.dtype == torch.float32
    assert out.mask.sum(1).tolist() == [12, 12, 12]  # vanilla masking untouched


def test_scheduled_temperature_buffer_is_used_when_no_temperature_is_passed():
    model = tiny_model()
    pixels, attention, noise = batch()
    model.set_attg_temperature(0.6)
    out = model(pixels, attention_map=attention, noise=noise)
    expected, _ = reference_loss(pixels, out.logits.detach(), out.mask, attention, "attg", 0.6)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_weights_range_from_one_on_background_to_exp_inverse_tau_on_object():
    model = tiny_model()
    pixels, _, noise = batch()
    attention = torch.zeros(3, GRID, GRID)
    attention[:, 1:3, 1:3] = 1.0  # a 2x2 object
    out = model(pixels, attention_map=attention, noise=noise, temperature=0.75)
    weights = out.patch_weights.reshape(3, GRID, GRID)
    assert torch.allclose(weights[:, 1:3, 1:3], torch.tensor(np.exp(1 / 0.75), dtype=torch.float32))
    assert (weights[:, 0] == 1).all() and (weights[:, 3] == 1).all()


def stock_copy(model):
    stock = ViTMAEForPreTraining(ViTMAEConfig(**{k: v for k, v in model.config.to_dict().items()
                                               if not k.startswith("attg_")}))
    missing, unexpected = stock.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected == []
    return stock.eval()


def test_guidance_none_equals_stock_vitmae_bit_for_bit():
    model = tiny_model(attg_guidance="none")
    stock = stock_copy(model)
    pixels, attention, noise = batch()
    ours = model(pixels, attention_map=attention, noise=noise).loss
    assert torch.equal(ours, stock(pixels, noise=noise).loss)
    assert torch.equal(model(pixels, noise=noise).loss, ours)  # no map needed for "none"


@pytest.mark.parametrize("guidance", ["attg", "inverted", "foreground_only", "background_only"])
def test_constant_map_equals_stock_vitmae_bit_for_bit(guidance):
    model = tiny_model(attg_guidance=guidance)
    stock = stock_copy(model)
    pixels, _, noise = batch()
    out = model(pixels, attention_map=torch.full((3, GRID, GRID), 0.37), noise=noise)
    assert torch.equal(out.patch_weights, torch.ones(3, N))
    assert not torch.isnan(out.loss)
    assert torch.equal(out.loss, stock(pixels, noise=noise).loss)


def test_input_masking_removes_the_most_attended_patches_and_keeps_the_vanilla_loss():
    model = tiny_model(attg_guidance="input_masking")
    stock = stock_copy(model)
    pixels, _, _ = batch()
    g = torch.Generator().manual_seed(5)
    attention = torch.randperm(N, generator=g).float().expand(3, N).clone()  # distinct values
    out = model(pixels, attention_map=attention)
    top = attention.argsort(dim=1, descending=True)[:, :12]
    expected_mask = torch.zeros(3, N).scatter_(1, top, 1.0)
    assert torch.equal(out.mask, expected_mask)
    # the loss is the plain MAE loss with that mask: the stock model with noise = attention agrees
    assert torch.allclose(out.loss, stock(pixels, noise=attention).loss, rtol=1e-6)
    with pytest.raises(ValueError, match="noise"):
        model(pixels, attention_map=attention, noise=torch.rand(3, N))


def test_input_masking_on_a_flat_map_is_random_not_fixed():
    model = tiny_model(attg_guidance="input_masking")
    pixels, _, _ = batch()
    masks = {tuple(model(pixels, attention_map=torch.zeros(3, N)).mask[0].tolist()) for _ in range(5)}
    assert len(masks) > 1


def test_map_on_another_grid_is_area_resampled():
    # an 8x8 map onto the 4x4 grid: every patch gets the mean of its 2x2 block
    g = torch.Generator().manual_seed(3)
    fine = torch.rand(2, 8, 8, generator=g)
    expected = fine.reshape(2, 4, 2, 4, 2).mean(dim=(2, 4)).reshape(2, 16)
    assert torch.allclose(resample_attention_map(fine, (4, 4)), expected, atol=1e-6)
    assert torch.allclose(resample_attention_map(fine.reshape(2, 64), (4, 4)), expected, atol=1e-6)
    # a 2x2 map grows bilinearly; a constant map stays constant, a map on the grid is unchanged
    assert torch.allclose(resample_attention_map(torch.full((1, 2, 2), 0.3), (4, 4)), torch.full((1, 16), 0.3))
    on_grid = torch.rand(2, 4, 4, generator=g)
    assert torch.equal(resample_attention_map(on_grid, (4, 4)), on_grid.reshape(2, 16))
    # the model uses that function: a fine map gives the same loss as its pooled version
    model = tiny_model()
    pixels, _, noise = batch(2)
    a = model(pixels, attention_map=fine, noise=noise).loss
    b = model(pixels, attention_map=expected.reshape(2, 4, 4), noise=noise).loss
    assert torch.allclose(a, b, rtol=1e-6)


def test_gradients_flow_to_encoder_and_decoder():
    model = tiny_model().train()
    pixels, attention, noise = batch()
    model(pixels, attention_map=attention, noise=noise).loss.backward()
    for name in ["vit.embeddings.patch_embeddings.projection.weight", "vit.layers.0.attention.q_proj.weight",
                 "vit.embeddings.cls_token", "decoder.decoder_pred.weight", "decoder.mask_token"]:
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert model.get_parameter("vit.embeddings.position_embeddings").grad is None  # fixed sin-cos, as in MAE
    assert attention.grad is None  # the map is an input, not something to learn


def test_bf16_autocast_stays_finite_and_weights_are_float32():
    model = tiny_model()
    pixels, attention, noise = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixels, attention_map=attention.bfloat16(), noise=noise, temperature=0.75)
    assert out.patch_weights.dtype == torch.float32 and out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)
    fp32 = model(pixels, attention_map=attention, noise=noise, temperature=0.75).loss
    assert out.loss.item() == pytest.approx(fp32.item(), rel=0.05)


def test_return_dict_false_gives_a_tuple_with_the_loss_first():
    model = tiny_model()
    pixels, attention, noise = batch()
    tup = model(pixels, attention_map=attention, noise=noise, return_dict=False)
    assert isinstance(tup, tuple)
    assert torch.equal(tup[0], model(pixels, attention_map=attention, noise=noise).loss)


@pytest.mark.parametrize(
    "attention_map, message",
    [
        (torch.rand(2, GRID, GRID), "batch size 2 does not match pixel_values batch size 3"),
        (torch.rand(3, 1, GRID, GRID), "rank 4"),
        (torch.rand(3, 15), "cannot be resampled to the 4x4 patch grid"),
        (torch.rand(3, GRID, 0), "empty grid"),
        (torch.ones(3, GRID, GRID, dtype=torch.long), "floating-point tensor, got dtype torch.int64"),
        (torch.ones(3, GRID, GRID, dtype=torch.bool), "floating-point tensor, got dtype torch.bool"),
    ],
)
def test_bad_attention_maps_raise_a_clear_error(attention_map, message):
    model = tiny_model()
    pixels, _, noise = batch()
    with pytest.raises(ValueError, match=message):
        model(pixels, attention_map=attention_map, noise=noise)


def _poisoned(attention, value):
    attention = attention.clone()
    attention[1, 2, 3] = value  # one cell of the second image
    return attention


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("guidance", [g for g in GUIDANCE_MODES if g != "none"])
def test_a_non_finite_map_is_not_read_by_the_forward_and_makes_the_loss_nan(guidance, value):
    # the forward's contract: it reads no device value on the host (a NaN / inf map is refused where maps are made:
    # the collator, the map step, the self maps, tests/test_data.py and test_object_discovery.py), and a broken map
    # that reaches it anyway gives NaN weights for its image and a NaN loss, in every mode: never the weight 1 (a
    # silent plain MAE) that normalising a NaN map as a constant one would give, nor the 0 of the threshold modes
    model = tiny_model(attg_guidance=guidance)
    pixels, attention, noise = batch()
    noise = None if guidance == "input_masking" else noise
    out = model(pixels, attention_map=_poisoned(attention, value), noise=noise)
    assert torch.isnan(out.loss)
    assert torch.isnan(out.patch_weights[1]).all() and torch.isfinite(out.patch_weights[[0, 2]]).all()


def test_a_tensor_temperature_is_not_read_on_the_host():
    model = tiny_model()
    pixels, attention, noise = batch()
    good = model(pixels, attention_map=attention, noise=noise, temperature=0.6).loss
    assert model(pixels, attention_map=attention, noise=noise, temperature=torch.tensor(0.6)).loss.item() == (
        pytest.approx(good.item(), rel=1e-6))
    for tau in (torch.tensor(0.0), torch.tensor(-1.0), torch.tensor(float("nan"))):
        # no ValueError (that needs the value on the host: a sync each step), a NaN loss instead
        assert torch.isnan(model(pixels, attention_map=attention, noise=noise, temperature=tau).loss)
        model.set_attg_temperature(tau)
        assert torch.isnan(model(pixels, attention_map=attention, noise=noise).loss)
    model.set_attg_temperature(torch.tensor(0.6))
    assert model(pixels, attention_map=attention, noise=noise).loss.item() == pytest.approx(good.item(), rel=1e-6)


def _inputs(guidance, tau=None):
    pixels, attention, noise = batch()
    inputs = {"pixel_values": pixels, "attention_map": attention}
    if guidance != "input_masking":
        inputs["noise"] = noise
    if tau is not None:
        inputs["temperature"] = tau
    return inputs


@pytest.mark.parametrize("guidance", GUIDANCE_MODES)
def test_the_guided_model_exports_with_the_eager_loss(guidance):
    # torch.export traces the forward as one graph: a branch on a device value (a host read, a sync on a GPU) fails
    # it with GuardOnDataDependentSymNode, as the map's finiteness check did
    model = tiny_model(attg_guidance=guidance)
    tau = None if guidance in ("none", "input_masking") else torch.tensor(0.6)  # a tensor tau is traced as well
    inputs = _inputs(guidance, tau)
    exported = torch.export.export(model, (), inputs, strict=False).module()
    if guidance == "input_masking":  # its masking noise is drawn in the forward: the same draw on both sides
        torch.manual_seed(0)
        expected = model(**inputs).loss
        torch.manual_seed(0)
        got = exported(**inputs).loss
    else:
        expected, got = model(**inputs).loss, exported(**inputs).loss
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_the_guided_model_compiles_as_one_graph_with_the_eager_loss(backend):
    # fullgraph=True refuses any graph break: a data-dependent branch (the host read of a sync) would be one.
    # inductor once (a C++ compile, ~30 s on two cores), for the numbers of the real backend
    torch._dynamo.reset()
    model = tiny_model(attg_guidance="attg")
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    for tau in (None, torch.tensor(0.6)):
        inputs = _inputs("attg", tau)
        torch.testing.assert_close(compiled(**inputs).loss, model(**inputs).loss, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.set_sync_debug_mode reports a "
                    "device-to-host sync only on a CUDA device (on the CPU the export / fullgraph tests stand in)")
@pytest.mark.parametrize("guidance", [g for g in GUIDANCE_MODES if g != "none"])
def test_a_guided_forward_makes_no_device_to_host_sync(guidance):
    model = tiny_model(attg_guidance=guidance).cuda()
    inputs = {k: v.cuda() for k, v in _inputs(guidance).items()}
    model(**inputs)  # warm-up: lazy CUDA initialisation may sync once
    model.set_attg_temperature(0.6)  # a Python number: checked on the host, written on the device without a sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = model(**inputs).loss
        loss = model(**inputs, temperature=torch.tensor(0.6, device="cuda")).loss if guidance == "attg" else loss
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)


@pytest.mark.parametrize("guidance", [g for g in GUIDANCE_MODES if g != "none"])
def test_missing_map_raises_instead_of_training_vanilla_mae(guidance):
    model = tiny_model(attg_guidance=guidance)
    with pytest.raises(ValueError, match="needs an `attention_map`"):
        model(batch()[0])


def test_bad_temperature_raises():
    model = tiny_model()
    pixels, attention, noise = batch()
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError, match="tau"):
            model(pixels, attention_map=attention, noise=noise, temperature=tau)
        with pytest.raises(ValueError, match="tau"):
            model.set_attg_temperature(tau)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(attg_guidance="attention"), "attg_guidance must be one of"),
        (dict(attg_temperature_schedule="linear"), "attg_temperature_schedule must be one of"),
        (dict(attg_temperature=0.0), "attg_temperature"),
        (dict(attg_temperature_end=-1.0), "attg_temperature_end"),
        (dict(attg_quantile=1.0), "attg_quantile"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_config_defaults_follow_the_paper():
    config = AttGViTMAEConfig()
    assert config.model_type == "vit_mae"
    assert (config.attg_temperature, config.attg_temperature_end) == (0.75, 1.0)
    assert config.attg_guidance == "attg" and config.attg_temperature_schedule == "cosine"
    assert config.norm_pix_loss is True and config.mask_ratio == 0.75 and config.attg_quantile == 0.1


def test_update_from_string_validates_and_keeps_the_old_values_on_a_bad_one():
    config = tiny_config()
    config.update_from_string("attg_temperature=0.5,attg_quantile=0.2")
    assert (config.attg_temperature, config.attg_quantile) == (0.5, 0.2)
    for update, message in [("attg_quantile=0.3,attg_temperature=0.0", "attg_temperature \\(tau\\) must be a number > 0"),
                            ("attg_guidance=attention", "attg_guidance must be one of"),
                            ("mask_ratio=1.0", "mask_ratio must be in")]:
        with pytest.raises(ValueError, match=message):
            config.update_from_string(update)
        # nothing of the refused update stays, not even its valid part
        assert (config.attg_temperature, config.attg_quantile, config.attg_guidance, config.mask_ratio) == (
            0.5, 0.2, "attg", 0.75)


def test_a_config_edited_before_the_model_is_built_is_checked_when_it_enters_the_model():
    config = tiny_config()
    config.attg_temperature = 0.0  # plain attribute assignment is not validated (the config is no strict dataclass)
    with pytest.raises(ValueError, match="attg_temperature \\(tau\\) must be a number > 0"):
        AttGViTMAEForPreTraining(config)


@pytest.mark.parametrize("name", ["patch_size", "image_size"])
def test_patch_and_image_size_accept_an_int_or_a_square_pair_only(name):
    from modeling_attg_mae.configuration_attg_mae import image_size_of, patch_size_of

    size_of = patch_size_of if name == "patch_size" else image_size_of
    value = PATCH if name == "patch_size" else IMAGE
    assert size_of(tiny_config(**{name: value})) == value
    assert size_of(tiny_config(**{name: [value, value]})) == value  # a JSON config stores a pair as a list
    with pytest.raises(ValueError, match=f"{name} must be an int or a square \\(side, side\\) pair"):
        tiny_config(**{name: (value, 2 * value)})


def test_a_guidance_changed_to_a_bad_value_after_construction_fails_at_forward():
    # the forward does not re-validate the config; the loss's dispatch refuses a mode it does not know instead of
    # falling back to the vanilla loss
    model = tiny_model()
    model.config.__dict__["attg_guidance"] = "typo"  # bypass the dataclass validation, as a raw edit would
    with pytest.raises(ValueError, match="attg_guidance must be one of"):
        model(*batch()[:2])


def test_mask_ratio_zero_is_refused_for_pretraining():
    model = tiny_model(mask_ratio=0.0)
    with pytest.raises(ValueError, match="masks no patch"):
        model(*batch()[:2])


def test_a_fresh_model_is_initialised_like_mae_not_with_zero_embeddings():
    # transformers 5.24 leaves position embeddings, CLS and mask token at zero for a model built from a config
    model = tiny_model()
    np.testing.assert_allclose(model.vit.embeddings.position_embeddings[0].numpy(), official_mae_sincos(32, GRID),
                               atol=1e-6)
    np.testing.assert_allclose(model.decoder.decoder_pos_embed[0].numpy(), official_mae_sincos(32, GRID), atol=1e-6)
    for token in (model.vit.embeddings.cls_token, model.decoder.mask_token):
        assert 0.01 < token.std().item() < 0.03  # normal(0, 0.02)
    weight = model.vit.embeddings.patch_embeddings.projection.weight
    bound = (6 / (weight.shape[0] + weight[0].numel())) ** 0.5  # xavier_uniform on the flattened kernel
    assert weight.abs().max().item() <= bound and weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)
    pixels, attention, noise = batch()
    model.train()(pixels, attention_map=attention, noise=noise).loss.backward()
    grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
    assert grad_norm < 100  # was ~1e4 with the zero embeddings (LayerNorm of zero vectors)


def test_a_map_that_is_not_a_tensor_gets_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="must be a torch.Tensor, got list"):
        model(batch()[0], attention_map=[[0.0] * N] * 3)
