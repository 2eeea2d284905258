"""k-NN vote, few-shot sampling, linear probe + LARS, metric module and feature cache, against hand computations."""

import math

import numpy as np
import pytest
import torch

from modeling_attg_mae.evaluation import (
    DEFAULT_LR_GRID,
    LARS,
    LinearProbeHead,
    cache_key,
    cached_features,
    checkpoint_fingerprint,
    degenerate_reason,
    held_out_split,
    knn_classify,
    learning_rate_at,
    linear_probe_rank,
    sample_few_shot,
    select_linear_probe_hparams,
    sweep_linear_probe_on_features,
    top_k_accuracy,
    train_linear_probe_on_features,
)

# Bank in 2-D: (angle to the query in degrees, norm, class). Norms differ to check the L2 normalisation.
BANK = [(8, 2.0, 0), (25, 0.5, 1), (27, 3.0, 1), (30, 1.0, 2), (31, 1.5, 2), (60, 0.7, 1), (170, 1.0, 0), (100, 4.0, 3)]


def _bank_tensors():
    features = torch.tensor([[n * math.cos(math.radians(a)), n * math.sin(math.radians(a))] for a, n, _ in BANK])
    labels = torch.tensor([c for _, _, c in BANK])
    return features, labels


def _hand_vote(k: int, temperature: float = 0.07) -> list[int]:
    """DINO's vote in plain Python: the k largest cosines, weight exp(cos / T) summed per class, ranked."""
    neighbours = sorted(((math.cos(math.radians(a)), c) for a, _, c in BANK), reverse=True)[:k]
    votes = {c: 0.0 for c in range(4)}
    for similarity, c in neighbours:
        votes[c] += math.exp(similarity / temperature)
    return sorted((c for c in votes if votes[c] > 0), key=lambda c: -votes[c])  # classes without votes tie


def test_knn_equals_hand_computed_weighted_vote():
    bank, labels = _bank_tensors()
    query = torch.tensor([[3.0, 0.0]])  # angle 0, not unit norm
    ranked = knn_classify(bank, labels, query, ks=[1, 3, 5, 8], num_classes=4, num_ranked=4)
    for k in (1, 3, 5, 8):
        expected = _hand_vote(k)
        assert ranked[k][0, : len(expected)].tolist() == expected, k
    # The weighting matters: with k=3 a majority vote picks class 1 (two neighbours), the weighted vote class 0.
    assert ranked[3][0, 0].item() == 0
    # num_ranked is capped at the number of classes
    assert knn_classify(bank, labels, query, ks=[3])[3].shape == (1, 4)


def test_knn_chunked_equals_unchunked():
    generator = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(500, 16, generator=generator), torch.randn(97, 16, generator=generator)
    labels = torch.randint(0, 7, (500,), generator=generator)
    reference = knn_classify(bank, labels, queries, ks=[1, 10, 50], chunk_size=97)
    for chunk_size in (1, 13):
        chunked = knn_classify(bank, labels, queries, ks=[1, 10, 50], chunk_size=chunk_size)
        for k in reference:
            assert torch.equal(chunked[k], reference[k])
    # the byte budget picks the chunk size: 500 floats per query row -> 3 rows per chunk
    budget = knn_classify(bank, labels, queries, ks=[1, 10, 50], max_chunk_bytes=3 * 500 * 4)
    assert all(torch.equal(budget[k], reference[k]) for k in reference)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ks=[9]), "larger than the k-NN bank"),
        (dict(ks=[0]), "positive"),
        (dict(ks=[2], temperature=0.0), "temperature"),
        (dict(ks=[2], num_classes=2), "num_classes"),
    ],
)
def test_knn_bad_input(kwargs, message):
    bank, labels = _bank_tensors()
    with pytest.raises(ValueError, match=message):
        knn_classify(bank, labels, torch.ones(1, 2), **kwargs)


def test_knn_shape_errors():
    bank, labels = _bank_tensors()
    with pytest.raises(ValueError, match="dim 3"):
        knn_classify(bank, labels, torch.ones(1, 3), ks=[1])
    with pytest.raises(ValueError, match="bank_labels has 7 entries"):
        knn_classify(bank, labels[:7], torch.ones(1, 2), ks=[1])
    with pytest.raises(ValueError, match="integer"):
        knn_classify(bank, labels.float(), torch.ones(1, 2), ks=[1])


def test_few_shot_sampling_is_stratified_and_deterministic():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 5 + [5] * 6)
    a = sample_few_shot(labels, shots=5, seed=3)
    counts = torch.bincount(labels[a], minlength=6).tolist()
    assert counts == [5, 5, 5, 0, 0, 5]  # every present class exactly 5 times, absent classes never
    assert len(set(a.tolist())) == 20
    assert torch.equal(a, sample_few_shot(labels, shots=5, seed=3))
    assert torch.equal(a, sample_few_shot(labels.tolist(), shots=5, seed=3))
    assert not torch.equal(a, sample_few_shot(labels, shots=5, seed=4))
    with pytest.raises(ValueError, match="class 2 has only 5 images, fewer than shots=6"):
        sample_few_shot(labels, shots=6, seed=0)


def test_lars_step_matches_formula():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # ||w|| = 5
    bias = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    optimizer = LARS([weight, bias], lr=0.5, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    g1_w, g1_b = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.2, 0.4])
    g2_w, g2_b = np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([-0.1, 0.0])
    w, b = np.array([[3.0, 0.0], [0.0, 4.0]]), np.array([1.0, -1.0])
    mu_w, mu_b = np.zeros((2, 2)), np.zeros(2)
    for g_w, g_b in ((g1_w, g1_b), (g2_w, g2_b)):
        weight.grad, bias.grad = torch.tensor(g_w, dtype=torch.float32), torch.tensor(g_b, dtype=torch.float32)
        optimizer.step()
        # by hand: weights get weight decay and the trust ratio; the bias neither
        d = g_w + 0.1 * w
        q = 0.001 * np.sqrt((w**2).sum()) / np.sqrt((d**2).sum())
        mu_w, mu_b = 0.9 * mu_w + q * d, 0.9 * mu_b + g_b
        w, b = w - 0.5 * mu_w, b - 0.5 * mu_b
        np.testing.assert_allclose(weight.detach().numpy(), w, rtol=1e-6)
        np.testing.assert_allclose(bias.detach().numpy(), b, rtol=1e-6)
    # zero weights: trust ratio 1 (plain momentum SGD)
    zero = torch.nn.Parameter(torch.zeros(2, 2))
    zero.grad = torch.ones(2, 2)
    LARS([zero], lr=0.5).step()
    assert torch.allclose(zero, torch.full((2, 2), -0.5))


def test_learning_rate_schedule():
    assert learning_rate_at(0, 1.0, 10, 2) == 0.0
    assert learning_rate_at(1, 1.0, 10, 2) == pytest.approx(0.5)
    assert learning_rate_at(2, 1.0, 10, 2) == pytest.approx(1.0)
    assert learning_rate_at(6, 1.0, 10, 2) == pytest.approx(0.5)  # half way through the cosine
    assert learning_rate_at(10, 1.0, 10, 2) == pytest.approx(0.0)


def test_linear_probe_head_is_mae_head():
    torch.manual_seed(0)
    head = LinearProbeHead(64, 10)
    assert not head.norm.affine and head.norm.eps == 1e-6
    assert head.linear.weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert head.linear.weight.abs().max().item() <= 0.02 and head.linear.bias.abs().sum().item() == 0


def test_linear_probe_separable_features():
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 32, generator=generator)
    train_y, test_y = torch.randint(0, 5, (1000,), generator=generator), torch.randint(0, 5, (500,), generator=generator)
    # features on very different scales per dimension, as MAE's are: the BatchNorm must absorb this
    scale = torch.logspace(-2, 2, 32)
    train_x = (centers[train_y] + 0.3 * torch.randn(1000, 32, generator=generator)) * scale
    test_x = (centers[test_y] + 0.3 * torch.randn(500, 32, generator=generator)) * scale
    # LARS moves |w| by ~lr * 0.001 per step, so 1000 images x 30 epochs need a larger base lr than ImageNet's 0.1
    head = train_linear_probe_on_features(train_x, train_y, epochs=30, warmup_epochs=3, batch_size=128, base_lr=10.0)
    accuracy = (linear_probe_rank(head, test_x)[:, 0] == test_y).float().mean().item()
    assert accuracy >= 0.95


def test_top_k_accuracy_metric_module():
    ranked = torch.tensor([[3, 1, 0], [2, 0, 1], [0, 1, 2], [1, 2, 0]])
    labels = torch.tensor([1, 2, 2, 0])
    # by hand: top-1 hits only example 1; top-2: examples 0, 1; all three ranked: every example
    assert top_k_accuracy(ranked, labels, ks=(1, 2, 5)) == {"top1": 0.25, "top2": 0.5, "top5": 1.0}
    with pytest.raises(ValueError, match="same Q"):
        top_k_accuracy(ranked, labels[:3])


def test_feature_cache_hit_miss_and_overwrite(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6.0).view(3, 2), torch.tensor([0, 1, 1])

    key = cache_key({"checkpoint": "a"}, {"dataset_name": "d"}, "train", {"image_size": 32}, "cls")
    first = cached_features(tmp_path, key, compute)
    second = cached_features(tmp_path, key, compute)
    assert (first[2], second[2], len(calls)) == (False, True, 1)
    assert torch.equal(second[0], torch.arange(6.0).view(3, 2)) and torch.equal(second[1], torch.tensor([0, 1, 1]))
    assert cached_features(tmp_path, key, compute, overwrite=True)[2] is False and len(calls) == 2
    other = cache_key({"checkpoint": "a"}, {"dataset_name": "d"}, "train", {"image_size": 32}, "mean")
    assert cached_features(tmp_path, other, compute)[2] is False and len(calls) == 3


def test_checkpoint_fingerprint_follows_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights-1")
    first = checkpoint_fingerprint(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"weights-2")
    assert checkpoint_fingerprint(str(tmp_path)) != first
    assert checkpoint_fingerprint("facebook/vit-mae-base", "abc") == {"checkpoint": "facebook/vit-mae-base", "commit": "abc"}
    with pytest.raises(ValueError, match="no Hub commit"):
        checkpoint_fingerprint("facebook/vit-mae-base")
    with pytest.raises(ValueError, match="no weight file"):
        checkpoint_fingerprint(str(tmp_path / ".."))


# ---------------------------------------------------------------------------------------------------------------
# Learning-rate sweep on a held-out slice, degenerate heads (issue 16)
# ---------------------------------------------------------------------------------------------------------------
def _logistic_regression_top1(train_x, train_y, test_x, test_y) -> float:
    """The reference: scikit-learn's LogisticRegression (C=1) on standardised features, top-1 in %."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x.numpy())
    model = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(train_x.numpy()), train_y.numpy())
    return 100.0 * model.score(scaler.transform(test_x.numpy()), test_y.numpy())


@pytest.fixture(scope="module")
def projected_synthetic():
    """Fixed random projections (256-D) of the synthetic set's 16 px pixels: train 5000, validation 600, 10 classes
    (the features of benchmarks/linear_probe_sweep.py, whose numbers docs/RESULTS.md reports)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "linear_probe_sweep.py"
    spec = importlib.util.spec_from_file_location("linear_probe_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.projected_features()


def _sweep_then_retrain(train_x, train_y, num_classes=10):
    selection = select_linear_probe_hparams(train_x, train_y, num_classes)
    head = train_linear_probe_on_features(train_x, train_y, num_classes, base_lr=selection.base_lr,
                                          weight_decay=selection.weight_decay)
    return head, selection


def test_sweep_matches_logistic_regression_on_random_projections(projected_synthetic):
    train_x, train_y = (tensor[:3000] for tensor in projected_synthetic["train"])
    test_x, test_y = projected_synthetic["validation"]
    reference = _logistic_regression_top1(train_x, train_y, test_x, test_y)
    head, selection = _sweep_then_retrain(train_x, train_y)
    top1 = 100.0 * (linear_probe_rank(head, test_x)[:, 0] == test_y).float().mean().item()
    assert reference > 50.0  # well above chance (10 %): the comparison means something
    # one-sided: a probe above the plain logistic regression is not a defect
    assert top1 >= reference - 1.5, (top1, reference, selection.grid)
    assert [p["base_lr"] for p in selection.grid] == list(DEFAULT_LR_GRID)


def test_mae_default_predicts_one_class_the_sweep_does_not(projected_synthetic):
    """Class 0 is 25 % of train (500 of 2030): MAE's fixed base lr 0.1 learns the class prior but not the features."""
    (x, y), (test_x, test_y) = projected_synthetic["train"], projected_synthetic["validation"]
    keep = torch.cat([torch.nonzero(y == c).flatten()[: 500 if c == 0 else 170] for c in range(10)])
    train_x, train_y = x[keep], y[keep]
    reference = _logistic_regression_top1(train_x, train_y, test_x, test_y)
    old = train_linear_probe_on_features(train_x, train_y, 10)  # today's default: base lr 0.1, 90 epochs
    old_predictions = linear_probe_rank(old, test_x)[:, 0]
    assert torch.bincount(old_predictions, minlength=10).max().item() >= 0.95 * len(test_y)
    assert "predicts class 0" in degenerate_reason(old_predictions, test_y, 10, old.train_loss)
    head, selection = _sweep_then_retrain(train_x, train_y)
    predictions = linear_probe_rank(head, test_x)[:, 0]
    top1 = 100.0 * (predictions == test_y).float().mean().item()
    assert top1 >= reference - 1.5, (top1, reference, selection.grid)
    assert selection.base_lr > 0.1 and degenerate_reason(predictions, test_y, 10, head.train_loss) is None


def test_one_pass_sweep_trains_each_grid_point_as_a_separate_run():
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, 16, generator=generator), torch.randint(0, 4, (300,), generator=generator)
    held_x, held_y = x[:40], y[:40]
    alone = sweep_linear_probe_on_features(x, y, held_x, held_y, 4, base_lrs=[3.0], epochs=5, warmup_epochs=1, batch_size=64)
    stacked = sweep_linear_probe_on_features(x, y, held_x, held_y, 4, base_lrs=[3.0, 0.3], weight_decays=[0.0, 1e-2],
                                             epochs=5, warmup_epochs=1, batch_size=64)
    # the first head starts from the same weights and sees the same batches; the others do not disturb it
    assert stacked[0] == pytest.approx(alone[0], rel=1e-5)
    assert [(p["base_lr"], p["weight_decay"]) for p in stacked] == [(3.0, 0.0), (3.0, 1e-2), (0.3, 0.0), (0.3, 1e-2)]
    # and equals the single-head trainer's loss at that lr
    single = train_linear_probe_on_features(x, y, 4, epochs=5, warmup_epochs=1, batch_size=64, base_lr=3.0)
    assert single.train_loss == pytest.approx(alone[0]["train_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="at least one base lr"):
        sweep_linear_probe_on_features(x, y, held_x, held_y, 4, base_lrs=[])


def test_held_out_split_is_stratified_disjoint_and_seeded():
    labels = torch.tensor([0] * 40 + [1] * 20 + [2] * 7)
    fit, held = held_out_split(labels, 0.15, seed=3)
    assert set(fit.tolist()).isdisjoint(held.tolist()) and sorted(fit.tolist() + held.tolist()) == list(range(67))
    assert torch.bincount(labels[held]).tolist() == [6, 3, 1]  # round(0.15 n), at least 1 per class
    assert torch.equal(held, held_out_split(labels, 0.15, seed=3)[1])
    assert not torch.equal(held, held_out_split(labels, 0.15, seed=4)[1])
    with pytest.raises(ValueError, match="class 2 .1 images. with no training image"):
        held_out_split(torch.tensor([0, 0, 0, 1, 1, 2]), 0.15, seed=0)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        held_out_split(labels, 1.0, seed=0)


def test_degenerate_reason():
    labels = torch.arange(100) % 10
    assert degenerate_reason(labels, labels, 10, train_loss=0.5) is None
    collapsed = torch.full((100,), 7)
    collapsed[:4] = 1
    assert degenerate_reason(collapsed, labels, 10, 0.5) == "predicts class 7 for 96.0% of the 100 images (the most frequent true class is 10.0%)"
    # a split whose labels are one class may be predicted as one class
    assert degenerate_reason(collapsed, torch.full((100,), 7), 10, 0.5) is None
    assert "not below log(10) = 2.303" in degenerate_reason(labels, labels, 10, train_loss=2.31)
