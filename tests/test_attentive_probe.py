"""The attentive probe: what it can read that a mean-pooled linear probe cannot, its parameter count, determinism,
the pipeline end to end (token cache, rows, model card) and its bad inputs."""

import json

import pytest
import torch
from safetensors import safe_open

from modeling_attg_mae import extract_features
from modeling_attg_mae.evaluation import few_shot
from modeling_attg_mae.evaluation.arguments import LinearProbeArguments
from modeling_attg_mae.evaluation.attentive_probe import (
    AttentiveProbeHead,
    attentive_probe_num_parameters,
    select_attentive_probe_hparams,
    train_attentive_probe_on_features,
)
from modeling_attg_mae.evaluation.linear_probe import (
    linear_probe_rank,
    select_linear_probe_hparams,
    train_linear_probe_on_features,
)
from modeling_attg_mae.cli import format_results_table
from modeling_attg_mae.evaluation.pipelines import run_linear_probe
from tests.conftest import colour_dataset, eval_arguments, reference_features

NUM_CLASSES, COPIES, DIM = 4, 3, 32


def marked_token_sets(num: int, seed: int, noise: float = 0.3):
    """`(tokens (num, C * COPIES, DIM), labels (num,))`.

    Every sample holds each of the C class vectors COPIES times, so the multiset of its tokens, and with it the mean
    over tokens, is the same for every class. One copy of the label's vector carries a marker (a fixed offset on
    dimension 0), at a random position: the class is in *which* vector is marked, readable only by looking at the
    marked token. Gaussian noise on every token makes the mean-pooled features differ between samples, but not
    between classes.
    """
    class_vectors = torch.randn(NUM_CLASSES, DIM, generator=torch.Generator().manual_seed(1234))
    marker = torch.zeros(DIM)
    marker[0] = 4.0
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num) % NUM_CLASSES
    tokens = class_vectors.repeat(COPIES, 1).expand(num, -1, -1).clone()  # (num, T, D): class c at c, c + C, ...
    tokens[torch.arange(num), labels] += marker  # the first copy of the label's vector is marked
    order = torch.argsort(torch.rand(num, tokens.shape[1], generator=generator), dim=1)  # a random order per sample
    tokens = torch.gather(tokens, 1, order[..., None].expand_as(tokens))
    return tokens + noise * torch.randn(tokens.shape, generator=generator), labels


def test_attentive_probe_reads_the_marked_token_where_a_mean_pooled_linear_probe_cannot():
    clean, _ = marked_token_sets(8, seed=0, noise=0.0)
    # the design's premise: without noise, the mean over tokens is the same vector for every class
    torch.testing.assert_close(clean.mean(1), clean.mean(1)[:1].expand(8, -1))
    train_x, train_y = marked_token_sets(512, seed=0)
    test_x, test_y = marked_token_sets(400, seed=1)
    schedule = dict(epochs=60, warmup_epochs=3, batch_size=64, seed=0)

    selection = select_attentive_probe_hparams(train_x, train_y, NUM_CLASSES, [1e-3, 3e-3, 1e-2], [0.0], num_heads=4,
                                               **schedule)
    head = train_attentive_probe_on_features(train_x, train_y, NUM_CLASSES, num_heads=4, base_lr=selection.base_lr,
                                             weight_decay=selection.weight_decay, **schedule)
    attentive_top1 = 100 * (linear_probe_rank(head, test_x)[:, 0] == test_y).float().mean().item()
    assert attentive_top1 >= 95.0, (attentive_top1, selection.grid)
    print(f"attentive probe top-1 {attentive_top1:.2f}% (base_lr {selection.base_lr:g})")

    # the package's own linear probe on the mean over tokens, with its own lr sweep: chance is 25%
    linear_selection = select_linear_probe_hparams(train_x.mean(1), train_y, NUM_CLASSES, **schedule)
    linear = train_linear_probe_on_features(train_x.mean(1), train_y, NUM_CLASSES, base_lr=linear_selection.base_lr,
                                            **schedule)
    linear_top1 = 100 * (linear_probe_rank(linear, test_x.mean(1))[:, 0] == test_y).float().mean().item()
    print(f"mean-pooled linear probe top-1 {linear_top1:.2f}% (base_lr {linear_selection.base_lr:g})")
    assert linear_top1 <= 35.0, linear_top1  # 400 test images: 35% is > 4 standard errors above chance


@pytest.mark.parametrize("dim,classes,queries,heads", [(32, 3, 1, 4), (32, 3, 4, 8), (48, 10, 2, 3), (768, 1000, 1, 8)])
def test_parameter_count_matches_the_formula(dim, classes, queries, heads):
    head = AttentiveProbeHead(dim, classes, num_queries=queries, num_heads=heads)
    counted = sum(p.numel() for p in head.parameters() if p.requires_grad)
    # queries Q*D; token LayerNorm 2D; in-projection 3D*D + 3D; out-projection D*D + D; LayerNorm 2D; classifier D*C + C
    by_hand = queries * dim + 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + 2 * dim + dim * classes + classes
    assert counted == by_hand == attentive_probe_num_parameters(dim, classes, queries)
    if (dim, classes, queries) == (32, 3, 1):
        assert counted == 4483  # 32 + 64 + 3168 + 1056 + 64 + 99


def test_few_shot_attentive_probe_is_deterministic_for_a_seed():
    tokens, labels = marked_token_sets(64, seed=3)
    settings = dict(num_classes=NUM_CLASSES, num_heads=4, epochs=3, warmup_epochs=1, batch_size=8, base_lr=3e-3)

    def run(seed):
        subset = few_shot.sample_few_shot(labels, 5, seed)
        head = train_attentive_probe_on_features(tokens[subset], labels[subset], seed=seed, **settings)
        return subset, head.state_dict(), head(tokens).detach(), head.train_loss

    first, again, other = run(0), run(0), run(1)
    assert torch.equal(first[0], again[0]) and first[3] == again[3]
    assert all(torch.equal(first[1][name], again[1][name]) for name in first[1])
    assert torch.equal(first[2], again[2])
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[2], other[2])


def _token_cache(cache_dir):
    """`{split: tokens}` of the cache's "tokens" entries (the key sits in each file's metadata)."""
    found = {}
    for path in cache_dir.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            key = json.loads(handle.metadata()["key"])
            if key["pooling"] == "tokens":
                found[key["split"]] = handle.get_tensor("features")
    return found


def test_run_linear_probe_attentive_end_to_end(checkpoint, tmp_path):  # noqa: F811 (the fixture)
    from huggingface_hub import ModelCard

    dataset = colour_dataset()
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path, seeds=[0, 1])
    # a CLS-pooled linear run first: its cache entries must survive the attentive run untouched
    linear = LinearProbeArguments(mode="features", epochs=5, warmup_epochs=1, probe_batch_size=8, lr_grid=[10.0])
    run_linear_probe(model_args, data_args, run_args, linear, dataset=dataset)
    cls_files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.safetensors")}
    assert len(cls_files) == 3

    probe = LinearProbeArguments(mode="features", head="attentive", epochs=30, warmup_epochs=3, probe_batch_size=8,
                                 lr_grid=[1e-3, 1e-2], few_shot=[3], attentive_num_heads=4)
    payload = run_linear_probe(model_args, data_args, run_args, probe, dataset=dataset)
    rows = payload["results"]
    assert [(r["method"], r["split"], r["shots"], r["seed"]) for r in rows] == [
        ("attentive_probe", "validation", None, 0), ("attentive_probe", "validation_shifted", None, 0),
        ("attentive_few_shot", "validation", 3, 0), ("attentive_few_shot", "validation", 3, 1),
        ("attentive_few_shot", "validation", 3, None),
        ("attentive_few_shot", "validation_shifted", 3, 0), ("attentive_few_shot", "validation_shifted", 3, 1),
        ("attentive_few_shot", "validation_shifted", 3, None),
    ]
    # width 32, 3 classes, one query: 4483 trainable parameters, on every row (few-shot means included)
    assert {r["num_parameters"] for r in rows} == {attentive_probe_num_parameters(32, 3, 1)} == {4483}
    assert {(r["attentive_num_queries"], r["attentive_num_heads"]) for r in rows} == {(1, 4)}
    main = rows[0]
    assert main["lr_selection"] == "held_out_sweep" and main["base_lr"] in (1e-3, 1e-2)
    assert [p["base_lr"] for p in main["sweep"]["grid"]] == [1e-3, 1e-2] and main["weight_decay"] == 0.05
    assert main["sweep"]["num_held_out"] == 3  # round(0.15 * 8) = 1 image of each of the 3 classes
    assert main["top1"] >= 90.0 and not main["degenerate"]  # colour classes: separable even for random weights
    summary = rows[4]
    assert summary["top1"] == pytest.approx((rows[2]["top1"] + rows[3]["top1"]) / 2)
    assert summary["num_seeds"] == 2 and "top1_std" in summary
    assert payload["pooling"] == "tokens" and payload["num_classes"] == 3

    written = json.loads((tmp_path / "out" / "linear_probe_results.json").read_text())
    assert written["results"] == rows and written["pooling"] == "tokens"
    assert f"{4483:,}" in format_results_table(payload)

    # the token cache: (N, 1 + 16 patches, 32) per split; its CLS token is the CLS feature of the hand pipeline
    tokens = _token_cache(tmp_path / "cache")
    assert {split: tuple(t.shape) for split, t in tokens.items()} == {
        "train": (24, 17, 32), "validation": (12, 17, 32), "validation_shifted": (12, 17, 32)}
    torch.testing.assert_close(tokens["train"][:, 0], reference_features(checkpoint, dataset["train"]), rtol=1e-4, atol=1e-4)
    for name, mtime in cls_files.items():  # the cls entries are still there, not rewritten
        assert (tmp_path / "cache" / name).stat().st_mtime_ns == mtime

    card = ModelCard.load(checkpoint / "README.md")
    attentive = {(r.dataset_split, r.metric_config): r for r in card.data.eval_results if "attentive" in r.metric_config}
    # 2 splits x (probe + 3-shot mean) x (top1, top5); per-seed rows are not on the card
    assert len(attentive) == 8
    result = attentive[("validation", "attentive-probe-top1-tokens")]
    assert result.metric_value == round(main["top1"], 2)
    assert result.metric_name == "attentive probe (cached tokens) top-1 (all tokens)"
    assert ("validation", "attentive-few-shot-3shot-top1-tokens") in attentive
    assert any(r.metric_config == "linear-probe-features-top1-cls" for r in card.data.eval_results)  # kept

    again = run_linear_probe(model_args, data_args, run_args, probe, dataset=dataset)
    assert again["cache_hits"] == {"train": True, "validation": True, "validation_shifted": True}
    assert again["results"] == rows  # same seeds, same subsets, same numbers


def test_attentive_bad_input_fails_clearly_and_before_any_work(checkpoint, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="does not divide the tokens' width 32.*pass one of \\[1, 2, 4, 8, 16, 32\\]"):
        AttentiveProbeHead(32, 3, num_heads=5)
    with pytest.raises(ValueError, match="--attentive_num_queries must be >= 1, got 0"):
        AttentiveProbeHead(32, 3, num_queries=0)
    with pytest.raises(ValueError, match="--head attentive .* pass --mode features"):
        LinearProbeArguments(head="attentive")  # the default mode is the protocol
    with pytest.raises(ValueError, match="--attentive_num_queries and --attentive_num_heads must be >= 1, got 0 and 8"):
        LinearProbeArguments(mode="features", head="attentive", attentive_num_queries=0)
    with pytest.raises(ValueError, match="--max_token_cache_gb must be > 0"):
        LinearProbeArguments(mode="features", head="attentive", max_token_cache_gb=0)
    with pytest.raises(ValueError, match=r"needs tokens \(N, T, D\) and labels \(N,\)"):
        train_attentive_probe_on_features(torch.zeros(8, 32), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"needs tokens \(B, T, 32\), got \(2, 5, 16\)"):
        AttentiveProbeHead(32, 3, num_heads=4)(torch.zeros(2, 5, 16))
    with pytest.raises(ValueError, match="pooling must be one of .*'tokens'"):
        extract_features(torch.nn.Identity(), torch.zeros(1, 3, 8, 8), "max")

    dataset = colour_dataset()
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path, eval_splits=["validation"])
    heads = LinearProbeArguments(mode="features", head="attentive", attentive_num_heads=5)
    with pytest.raises(ValueError, match="--attentive_num_heads 5 does not divide the tokens' width 32"):
        run_linear_probe(model_args, data_args, run_args, heads, dataset=dataset)
    small = LinearProbeArguments(mode="features", head="attentive", attentive_num_heads=4, max_token_cache_gb=1e-6)
    # (2 x 24 train (the sweep's copy) + 12) images x 17 tokens x 32 dims x 4 bytes = 130560 bytes = 0.00013 GB
    with pytest.raises(ValueError, match=r"would hold 0.0 GB .*\(60 images x 17 tokens x 32 dims: splits train, "
                                         r"validation, the train split twice for the lr sweep\), over "
                                         r"--max_token_cache_gb 1e-06; raise --max_token_cache_gb"):
        run_linear_probe(model_args, data_args, run_args, small, dataset=dataset)
    from modeling_attg_mae.evaluation.runner import token_features_gb
    from modeling_attg_mae.model_source import load_encoder

    assert token_features_gb(load_encoder(str(checkpoint))[1], 60) == pytest.approx(130560 / 1e9)
    assert not (tmp_path / "cache").exists()  # no image was encoded


def test_head_dependent_defaults_and_cli_flags():
    from modeling_attg_mae.cli import parse_cli
    from modeling_attg_mae.evaluation.arguments import EvalModelArguments

    linear = LinearProbeArguments(mode="features")
    assert (linear.base_lr, linear.weight_decay, linear.weight_decay_grid) == (0.1, 0.0, [0.0])
    assert linear.lr_grid == [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
    attentive = LinearProbeArguments(mode="features", head="attentive")
    assert (attentive.base_lr, attentive.weight_decay, attentive.weight_decay_grid) == (1e-3, 0.05, [0.05])
    assert attentive.lr_grid == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2] and attentive.attentive_num_queries == 1
    _, parsed = parse_cli((EvalModelArguments, LinearProbeArguments), [
        "--model_name_or_path", "x", "--mode", "features", "--head", "attentive", "--lr_grid", "1e-3", "1e-2",
        "--attentive_num_queries", "4", "--attentive_num_heads", "12", "--max_token_cache_gb", "64"])
    assert (parsed.head, parsed.lr_grid, parsed.attentive_num_queries, parsed.attentive_num_heads) == (
        "attentive", [1e-3, 1e-2], 4, 12)
    assert (parsed.base_lr, parsed.weight_decay_grid, parsed.max_token_cache_gb) == (1e-3, [0.05], 64.0)


@pytest.mark.parametrize("queries, heads, dim", [(1, 8, 128), (3, 4, 32), (2, 1, 16)])
def test_factorised_pooling_equals_multihead_attention(queries, heads, dim):
    """`pool` folds the key projection into the learned queries and applies the value projection after the
    weighted sum; it must be the function nn.MultiheadAttention computes, biases included, weights too."""
    torch.manual_seed(0)
    head = AttentiveProbeHead(dim, 7, queries, heads)
    with torch.no_grad():  # non-zero biases, so that dropping the key bias or misplacing the value bias shows
        head.attention.in_proj_bias.normal_()
        head.attention.out_proj.bias.normal_()
    tokens = 3 * torch.randn(5, 11, dim)
    pooled, weights = head.pool(tokens, need_weights=True)
    keys = head.token_norm(tokens)
    expected, expected_weights = head.attention(head.queries.expand(5, -1, -1), keys, keys, need_weights=True)
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-6)
    # and the gradients the optimiser sees
    pooled.square().sum().backward()
    grads = [p.grad.clone() for p in head.parameters() if p.grad is not None]
    head.zero_grad()
    keys = head.token_norm(tokens)
    head.attention(head.queries.expand(5, -1, -1), keys, keys)[0].square().sum().backward()
    for got, want in zip(grads, [p.grad for p in head.parameters() if p.grad is not None]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
