"""Retrieval: revisitop's mAP / mP@k (by hand and against a transcription of its code), the ground-truth loader,
multi-scale features, and run_retrieval end to end on both inputs."""

import json
import os
import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from PIL import Image

from modeling_attg_mae import extract_features
from modeling_attg_mae.evaluation.arguments import EvalModelArguments, KNNArguments, RetrievalArguments
from modeling_attg_mae.evaluation.pipelines import run_knn
from modeling_attg_mae.evaluation.retrieval import (
    PROTOCOLS,
    compute_map,
    convert_gnd,
    evaluate_by_label,
    evaluate_revisited,
    load_gnd,
    load_gnd_pickle,
    main as retrieval_main,
    run_retrieval,
)
from modeling_attg_mae.features import MULTI_SCALES, extract_multi_scale_features
from tests.conftest import IMAGE, colour_dataset, eval_arguments, reference_features, tiny_model

REPO = Path(__file__).resolve().parents[1]


# --- a faithful transcription of revisitop's python/evaluate.py (filipradenovic/revisitop, compute_ap and
# --- compute_map), the reference the vectorised code must equal; only `np.in1d` is spelled `np.isin`
def _reference_compute_ap(ranks, nres):
    nimgranks = len(ranks)
    ap = 0
    recall_step = 1.0 / nres
    for j in np.arange(nimgranks):
        rank = ranks[j]
        if rank == 0:
            precision_0 = 1.0
        else:
            precision_0 = float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def _reference_compute_map(ranks, gnd, kappas=()):  # ranks: (db_size, num_queries), as revisitop's
    map = 0.0
    nq = len(gnd)
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = gnd[i]["ok"]
        if qgnd.shape[0] == 0:
            aps[i] = float("nan")
            prs[i, :] = float("nan")
            nempty += 1
            continue
        try:
            qgndj = gnd[i]["junk"]
        except KeyError:
            qgndj = np.empty(0)
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while ip < len(pos):
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = _reference_compute_ap(pos, len(qgnd))
        map = map + ap
        aps[i] = ap
        pos += 1
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    map = map / (nq - nempty)
    pr = pr / (nq - nempty)
    return map, aps, pr, prs


# Query 0 ranks database image 3 first, then 7, 0, 5, ...; query 1 has no hard image, so Hard skips it.
HAND_RANKS = torch.tensor([[3, 7, 0, 5, 9, 1, 2, 8, 4, 6], [2, 6, 0, 1, 3, 4, 5, 7, 8, 9]])
HAND_GND = [
    {"easy": np.array([7, 1]), "hard": np.array([5, 8]), "junk": np.array([0, 4]), "bbx": None},
    {"easy": np.array([2]), "hard": np.array([], dtype=np.int64), "junk": np.array([6]), "bbx": None},
]


def _trapezoids(positions):
    """AP of positives at 0-based junk-free ranks `positions`: sum of (j/r + (j+1)/(r+1)) / 2, over the count."""
    terms = [((Fraction(j, r) if r else Fraction(1)) + Fraction(j + 1, r + 1)) / 2 for j, r in enumerate(positions)]
    return float(sum(terms) / len(positions))


# By hand, query 0 (junk-free 0-based ranks of its positives):
#   Medium: positives 7,5,1,8 at ranks 1,3,5,7; junk 0 (rank 2), 4 (rank 8) -> 1, 2, 4, 6
#   Easy:   positives 7,1 at 1,5; junk 0,5,8,4 at 2,3,7,8 -> 1, 3
#   Hard:   positives 5,8 at 3,7; junk 7,0,1,4 at 1,2,5,8 -> 1, 4
# Query 1: its only positive (2, easy) is ranked first -> AP 1 under Easy and Medium; empty under Hard.
HAND_AP = {"easy": [_trapezoids([1, 3]), 1.0], "medium": [_trapezoids([1, 2, 4, 6]), 1.0], "hard": [_trapezoids([1, 4]), None]}
# mP@k with kq = min(k, 1-based position of the last positive): query 0
#   Medium positions 2,3,5,7: @1 0/1, @5 3/5, @10 kq=7 -> 4/7;  Easy 2,4: 0, kq=4 -> 2/4, 2/4;  Hard 2,5: 0, 2/5, 2/5
HAND_P = {"easy": [[0, 0.5, 0.5], [1, 1, 1]], "medium": [[0, 0.6, 4 / 7], [1, 1, 1]], "hard": [[0, 0.4, 0.4], None]}


def test_hand_computed_map_and_precision_of_the_three_protocols():
    assert _trapezoids([1, 2, 4, 6]) == pytest.approx((1 / 4 + 7 / 12 + 11 / 20 + 15 / 28) / 4)  # the arithmetic spelled out
    # database = the basis vectors, query i = weights decreasing along its ranking: cosine ranks as HAND_RANKS
    database = torch.eye(10)
    queries = torch.zeros(2, 10)
    for i in range(2):
        queries[i, HAND_RANKS[i]] = torch.arange(10, 0, -1).float()
    by_features = evaluate_revisited(database, queries, HAND_GND, kappas=(1, 5, 10))
    for protocol, (ok, ignore) in PROTOCOLS.items():
        by_ranks = compute_map(HAND_RANKS, [np.concatenate([g[n] for n in ok]) for g in HAND_GND],
                               [np.concatenate([g[n] for n in ignore]) for g in HAND_GND], kappas=(1, 5, 10))
        for scores in (by_ranks, by_features[protocol]):
            valid = [ap for ap in HAND_AP[protocol] if ap is not None]
            assert scores.map == pytest.approx(np.mean(valid), abs=1e-12)
            assert scores.num_empty == len(HAND_AP[protocol]) - len(valid)
            for q, ap in enumerate(HAND_AP[protocol]):
                assert np.isnan(scores.aps[q].item()) if ap is None else scores.aps[q].item() == pytest.approx(ap, abs=1e-12)
            rows = [p for p in HAND_P[protocol] if p is not None]
            assert list(scores.mp.values()) == pytest.approx(np.mean(rows, axis=0).tolist(), abs=1e-12)
    assert by_features["hard"].map == pytest.approx(23 / 80)  # query 0 alone: (1/4 + 13/40) / 2
    # every query without a hard image: mAP undefined, reported as null and kept off the model card
    no_hard = [{**g, "hard": np.array([], dtype=np.int64)} for g in HAND_GND]
    hard = evaluate_revisited(database, queries, no_hard)["hard"]
    assert np.isnan(hard.map) and hard.num_empty == 2 and all(np.isnan(v) for v in hard.mp.values())
    from modeling_attg_mae.evaluation.retrieval import _row
    from modeling_attg_mae.hub import eval_results_from_rows

    row = _row("query", "hard", hard, 10, False)
    assert row["map"] is None and row["mp_at_k"]["1"] is None and eval_results_from_rows([row], "toy", "cls") == []


@pytest.mark.parametrize("seed", range(6))
def test_compute_map_equals_revisitops_on_random_rankings(seed):
    rng = np.random.default_rng(seed)
    num_database, num_queries, kappas = 60, 25, [1, 5, 10, 50]
    ranks = np.stack([rng.permutation(num_database) for _ in range(num_queries)], axis=1)  # (N, Q) as revisitop
    gnd = []
    for i in range(num_queries):
        chosen = rng.permutation(num_database)
        sizes = rng.integers(0, 8, size=3) if i % 5 else (0, 0, rng.integers(0, 5))  # every 5th query has no positive
        easy, hard = chosen[: sizes[0]], chosen[sizes[0] : sizes[0] + sizes[1]]
        junk = chosen[sizes[0] + sizes[1] : sum(sizes)]
        if seed % 2:  # odd seeds: junk overlapping the positives, as a careless ground truth could have
            junk = np.concatenate([junk, easy[:1]])
        gnd.append({"easy": easy, "hard": hard, "junk": junk})
    for ok, ignore in PROTOCOLS.values():
        positives = [np.concatenate([g[n] for n in ok]) for g in gnd]
        junk = [np.concatenate([g[n] for n in ignore]) for g in gnd]
        expected = _reference_compute_map(ranks, [{"ok": p, "junk": j} for p, j in zip(positives, junk)], kappas)
        got = compute_map(torch.from_numpy(ranks.T.copy()), positives, junk, kappas)
        assert got.map == pytest.approx(expected[0], abs=1e-12)
        np.testing.assert_allclose(got.aps.numpy(), expected[1], atol=1e-12)  # NaN where empty, on both sides
        np.testing.assert_allclose(list(got.mp.values()), expected[2], atol=1e-12)
        np.testing.assert_allclose(got.prs.numpy(), expected[3], atol=1e-12)
        assert got.num_empty == int(np.isnan(expected[1]).sum())


def test_revisited_scores_from_features_equal_compute_map_of_the_ranking_in_small_chunks():
    generator = torch.Generator().manual_seed(0)
    database, queries = torch.randn(40, 8, generator=generator), torch.randn(9, 8, generator=generator)
    rng = np.random.default_rng(1)
    gnd = [{name: rng.choice(40, size=rng.integers(0, 6), replace=False) for name in ("easy", "hard", "junk")} for _ in range(9)]
    ranks = (F.normalize(queries, dim=1) @ F.normalize(database, dim=1).t()).argsort(dim=1, descending=True)
    chunked = evaluate_revisited(database, queries, gnd, max_chunk_bytes=40 * 24 * 2)  # 2 queries per chunk
    for protocol, (ok, ignore) in PROTOCOLS.items():
        ref = _reference_compute_map(ranks.t().numpy(), [
            {"ok": np.concatenate([g[n] for n in ok]), "junk": np.concatenate([g[n] for n in ignore])} for g in gnd], [1, 5, 10])
        assert chunked[protocol].map == pytest.approx(ref[0], abs=1e-12)
        np.testing.assert_allclose(chunked[protocol].prs.numpy(), ref[3], atol=1e-12)


def test_label_retrieval_by_hand():
    # 1-D features: the cosine of +x vs -x features is +1 / -1, so the ranking is every same-sign image first
    database = torch.tensor([[1.0, 0.1], [1.0, 0.0], [-1.0, 0.0], [1.0, -0.1], [-1.0, 0.1]])
    database_labels = torch.tensor([0, 1, 0, 0, 2])
    queries, query_labels = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 2, 3])
    # query 0 ranks 1 (cos 1), then 0 and 3 (cos 0.995, tie -> database order), then 4, 2 (sorted by cos: -0.995, -1)
    #   positives (label 0) 0, 3, 2 at ranks 1, 2, 4 -> AP = (1/2*(0+1/2) + 1/2*(1/2+2/3) + 1/2*(2/4+3/5)) / 3
    # query 1 ranks 2 (cos 1), 4 (0.995), ...: its positive 4 at rank 1 -> AP = (0 + 1/2) / 2 = 1/4
    # query 2 has label 3, absent from the database: empty, skipped
    scores = evaluate_by_label(database, database_labels, queries, query_labels, kappas=(1, 2, 5))
    ap0 = (0.25 + (0.5 + 2 / 3) / 2 + (0.5 + 0.6) / 2) / 3
    assert scores.aps[0].item() == pytest.approx(ap0) and scores.aps[1].item() == pytest.approx(0.25)
    assert np.isnan(scores.aps[2].item()) and scores.num_empty == 1
    assert scores.map == pytest.approx((ap0 + 0.25) / 2)
    # mP@k: query 0 positions 2, 3, 5 -> @1 0, @2 1/2, @5 3/5; query 1 position 2 -> @1 0, @2 kq=2 1/2, @5 kq=2 1/2
    assert list(scores.mp.values()) == pytest.approx([0.0, 0.5, (0.6 + 0.5) / 2])


def _gnd_dict():
    return {
        "imlist": ["db_a", "db_b", "db_c"],
        "qimlist": ["q_a"],
        "gnd": [{"bbx": np.array([1.5, 2.0, 30.0, 25.5]), "easy": np.array([0], dtype=np.int64),
                 "hard": np.array([2]), "junk": np.array([], dtype=np.int64)}],
    }


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_restricted_loader_reads_a_genuine_pickle_and_its_json_conversion(tmp_path, protocol):
    source = tmp_path / "gnd_toy.pkl"
    source.write_bytes(pickle.dumps(_gnd_dict(), protocol=protocol))  # protocol 2 stores array bytes via _codecs
    gnd = load_gnd(source)
    assert gnd["imlist"] == ["db_a", "db_b", "db_c"] and gnd["qimlist"] == ["q_a"]
    assert gnd["gnd"][0]["bbx"] == (1.5, 2.0, 30.0, 25.5)
    assert [gnd["gnd"][0][k].tolist() for k in ("easy", "hard", "junk")] == [[0], [2], []]
    target = tmp_path / "gnd_toy.json"
    retrieval_main(["convert-gnd", str(source), str(target)])
    converted = load_gnd(target)
    assert converted["gnd"][0]["bbx"] == gnd["gnd"][0]["bbx"] and converted["gnd"][0]["hard"].tolist() == [2]
    target.write_text("{}")  # a file the user has: not overwritten without --overwrite
    with pytest.raises(ValueError, match="exists; pass --overwrite"):
        convert_gnd(source, target)
    assert target.read_text() == "{}"
    retrieval_main(["convert-gnd", str(source), str(target), "--overwrite"])
    assert json.loads(target.read_text())["qimlist"] == ["q_a"]


def test_restricted_loader_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "was_run"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "gnd_evil.pkl"
    path.write_bytes(pickle.dumps({**_gnd_dict(), "gnd": [evil]}))
    with pytest.raises(ValueError, match=rf"refusing to load {path}: it references the global (posix|os|nt)\.system"):
        load_gnd_pickle(path)
    assert not marker.exists()  # os.system was never called
    path.write_bytes(pickle.dumps({"imlist": [], "x": eval}))
    with pytest.raises(ValueError, match=r"builtins\.eval"):
        load_gnd(path)


def test_gem_pooling_by_hand_and_multi_scale():
    model = tiny_model()
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    from modeling_attg_mae.features import encode_tokens

    tokens, prefix = encode_tokens(model, pixels)
    patches = tokens[:, prefix:].double()
    gem = (patches.clamp(min=1e-6) ** 3).mean(1) ** (1 / 3)
    torch.testing.assert_close(extract_features(model, pixels, "gem").double(), gem, rtol=1e-5, atol=1e-6)
    # scale 1 alone is the single-scale feature, L2-normalised
    for pooling in ("cls", "gem"):
        single = F.normalize(extract_features(model, pixels, pooling), dim=1)
        torch.testing.assert_close(extract_multi_scale_features(model, pixels, pooling, (1.0,)), single)
    # three scales: the normalised mean of the features of the bilinearly resized inputs
    expected = sum(
        extract_features(model, pixels if s == 1 else F.interpolate(pixels, scale_factor=s, mode="bilinear", align_corners=False),
                         "cls", interpolate_pos_encoding=True) for s in MULTI_SCALES) / 3
    torch.testing.assert_close(extract_multi_scale_features(model, pixels, "cls"), F.normalize(expected, dim=1))
    assert not torch.allclose(extract_multi_scale_features(model, pixels, "cls"), F.normalize(extract_features(model, pixels), dim=1))


def test_label_retrieval_end_to_end_writes_json_and_card(checkpoint, tmp_path):  # noqa: F811
    dataset = colour_dataset()
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path)
    run_knn(model_args, data_args, run_args, KNNArguments(ks=[3]), dataset=dataset)  # its card rows must survive
    payload = run_retrieval(model_args, data_args, run_args, RetrievalArguments(kappas=[1, 5]), dataset=dataset)
    # single scale shares the k-NN features (same cache entries)
    assert payload["cache_hits"] == {"train": True, "validation": True, "validation_shifted": True}
    bank, bank_labels = reference_features(checkpoint, dataset["train"]), torch.tensor(dataset["train"]["label"])
    queries, labels = reference_features(checkpoint, dataset["validation"]), torch.tensor(dataset["validation"]["label"])
    expected = evaluate_by_label(bank, bank_labels, queries, labels, kappas=(1, 5))
    row = payload["results"][0]
    assert (row["method"], row["split"], row["protocol"], row["num_queries"], row["num_empty"], row["num_database"]) == (
        "retrieval", "validation", "same_label", 12, 0, 24)
    assert row["map"] == pytest.approx(100 * expected.map) and row["mp_at_k"]["5"] == pytest.approx(100 * expected.mp[5])
    saved = json.loads((tmp_path / "out" / "retrieval_results.json").read_text())
    assert saved["results"] == payload["results"] and saved["input"] == "labels" and saved["scales"] == [1.0]
    assert [r["split"] for r in saved["results"]] == ["validation", "validation_shifted"]

    multi = run_retrieval(model_args, data_args, run_args, RetrievalArguments(multi_scale=True), dataset=dataset)
    assert not any(multi["cache_hits"].values()) and multi["results"][0]["multi_scale"]
    card = ModelCard.load(checkpoint / "README.md")
    configs = {(r.dataset_split, r.metric_config): r.metric_value for r in card.data.eval_results}
    assert configs[("validation", "retrieval-same-label-map-cls")] == round(row["map"], 2)
    assert ("validation", "retrieval-same-label-map-cls-ms") in configs  # multi-scale does not replace single scale
    assert ("validation", "knn-k3-top1-cls") in configs and "| value (%) |" in card.text
    assert "retrieval mAP (same label, cls pooling, single-scale)" in card.text


def _jpeg(path: Path, size, colour, seed):
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def _revisited_layout(root: Path, bbx=(4.0, 6.0, 36.0, 30.0)) -> Path:
    """`root/gnd_toy5.pkl` + `root/jpg/*.jpg`: 6 database images (3 red, 3 blue), 2 queries."""
    (root / "jpg").mkdir(parents=True)
    colours = {"r": (220, 40, 40), "b": (40, 60, 220)}
    names = []
    for i, colour in enumerate("rrrbbb"):
        names.append(f"db{i}_{colour}")
        _jpeg(root / "jpg" / f"{names[-1]}.jpg", (48, 40) if i % 2 else (40, 56), colours[colour], i)
    for i, colour in enumerate("rb"):
        _jpeg(root / "jpg" / f"query_{colour}.jpg", (48, 40), colours[colour], 10 + i)
    gnd = {
        "imlist": names, "qimlist": ["query_r", "query_b"],
        "gnd": [{"bbx": np.array(bbx), "easy": np.array([0, 1]), "hard": np.array([2]), "junk": np.array([3])},
                {"bbx": np.array(bbx), "easy": np.array([4]), "hard": np.array([], dtype=np.int64), "junk": np.array([5])}],
    }
    (root / "gnd_toy5.pkl").write_bytes(pickle.dumps(gnd, protocol=2))
    return root / "gnd_toy5.pkl"


def _hand_revisited_features(checkpoint, paths, boxes, size=32):  # noqa: F811
    """DINO by hand: crop, PIL thumbnail (Lanczos) to `size`, /255, ImageNet mean/std, one image per forward."""
    from transformers import ViTMAEModel

    model = ViTMAEModel.from_pretrained(checkpoint).eval()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    features = []
    for path, box in zip(paths, boxes):
        image = Image.open(path).convert("RGB")
        image = image.crop(box) if box is not None else image
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        array = (np.asarray(image, dtype=np.float32) / 255 - mean) / std
        pixels = torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1)[None]
        features.append(extract_features(model, pixels, "cls", interpolate_pos_encoding=True))
    return F.normalize(torch.cat(features), dim=1)


def test_revisited_layout_end_to_end_through_the_cli(checkpoint, tmp_path):  # noqa: F811
    import run_retrieval as cli

    gnd_file = _revisited_layout(tmp_path / "toy5")
    out = tmp_path / "out"
    argv = ["--model_name_or_path", str(checkpoint), "--gnd_file", str(gnd_file), "--output_dir", str(out),
            "--feature_cache_dir", str(tmp_path / "cache"), "--progress", "false", "--kappas", "1", "2"]
    payload = cli.main(argv)
    assert payload["cache_hits"] == {"database": False, "query": False}
    assert payload["dataset"] == "toy5" and payload["images_dir"] == str(tmp_path / "toy5" / "jpg")
    gnd = load_gnd(gnd_file)
    folder = tmp_path / "toy5" / "jpg"
    database = _hand_revisited_features(checkpoint, [folder / f"{n}.jpg" for n in gnd["imlist"]], [None] * 6)
    queries = _hand_revisited_features(checkpoint, [folder / f"{n}.jpg" for n in gnd["qimlist"]], [(4.0, 6.0, 36.0, 30.0)] * 2)
    expected = evaluate_revisited(database, queries, gnd["gnd"], kappas=(1, 2))
    rows = {r["protocol"]: r for r in payload["results"]}
    assert sorted(rows) == ["easy", "hard", "medium"]
    for protocol, scores in expected.items():
        assert rows[protocol]["map"] == pytest.approx(100 * scores.map)
        assert rows[protocol]["mp_at_k"]["2"] == pytest.approx(100 * scores.mp[2])
    assert (rows["hard"]["num_empty"], rows["medium"]["num_empty"]) == (1, 0)  # query 2 has no hard image
    saved = json.loads((out / "retrieval_results.json").read_text())
    assert saved["results"] == payload["results"] and saved["input"] == "revisited" and saved["crop_queries"]
    card = ModelCard.load(checkpoint / "README.md")
    assert {("query", f"retrieval-{p}-map-cls") for p in ("easy", "medium", "hard")} <= {
        (r.dataset_split, r.metric_config) for r in card.data.eval_results if r.dataset_name == "toy5"}

    again = cli.main(argv)  # cached; the JSON conversion of the gnd file gives the same numbers
    assert again["cache_hits"] == {"database": True, "query": True} and again["results"] == payload["results"]
    convert_gnd(gnd_file, tmp_path / "toy5" / "gnd_toy5.json")
    as_json = cli.main([*argv[:3], str(tmp_path / "toy5" / "gnd_toy5.json"), *argv[4:], "--multi_scale", "true"])
    assert as_json["dataset"] == "toy5" and as_json["scales"] == pytest.approx(list(MULTI_SCALES))
    assert all(0.0 <= r["map"] <= 100.0 for r in as_json["results"] if r["map"] is not None)


def _expect_error(tmp_path, checkpoint, match, retrieval_kwargs=None, dataset=None, **data):  # noqa: F811
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path, **data)
    with pytest.raises(ValueError, match=match):
        run_retrieval(model_args, data_args, run_args, RetrievalArguments(**(retrieval_kwargs or {})), dataset=dataset)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()  # no feature extracted, nothing written


def test_bad_inputs_fail_before_any_feature_is_extracted(checkpoint, tmp_path):  # noqa: F811
    gnd_file = _revisited_layout(tmp_path / "toy5")
    _expect_error(tmp_path, checkpoint, "ground-truth file .*nope.pkl does not exist", {"gnd_file": str(tmp_path / "nope.pkl")})
    (tmp_path / "keys.pkl").write_bytes(pickle.dumps({"imlist": ["a"], "gnd": []}))
    _expect_error(tmp_path, checkpoint, r"keys.pkl: missing key\(s\) \['qimlist'\]", {"gnd_file": str(tmp_path / "keys.pkl")})
    cfg = {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1, 1], "easy": [0], "junk": []}]}
    (tmp_path / "lists.json").write_text(json.dumps(cfg))
    _expect_error(tmp_path, checkpoint, r"gnd\[0\] \(query 'q'\) has no key\(s\) \['hard'\]", {"gnd_file": str(tmp_path / "lists.json")})
    cfg["gnd"][0]["hard"] = [3]
    (tmp_path / "index.json").write_text(json.dumps(cfg))
    _expect_error(tmp_path, checkpoint, r"index.json: gnd\[0\]\['hard'\] holds index 3, outside the database \[0, 1\)",
                  {"gnd_file": str(tmp_path / "index.json")})
    (tmp_path / "empty.json").write_text(json.dumps({"imlist": ["a"], "qimlist": [], "gnd": []}))
    _expect_error(tmp_path, checkpoint, "'qimlist' is empty: the query set is empty", {"gnd_file": str(tmp_path / "empty.json")})
    (tmp_path / "toy5" / "jpg" / "db4_b.jpg").unlink()
    _expect_error(tmp_path, checkpoint, r"1 image\(s\) of the ground truth are missing, e.g. \[.*db4_b.jpg'\]", {"gnd_file": str(gnd_file)})
    out_of_image = _revisited_layout(tmp_path / "bad_box", bbx=(0.0, 0.0, 60.0, 30.0))
    _expect_error(tmp_path, checkpoint, r"query 0: bbx \(0.0, 0.0, 60.0, 30.0\) lies outside its image .*query_r.jpg of size 48x40",
                  {"gnd_file": str(out_of_image)})
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        EvalModelArguments(model_name_or_path=str(checkpoint), pooling="max")
    dataset = colour_dataset()
    _expect_error(tmp_path, checkpoint, r"'class' not found", dataset=dataset, label_column_name="class")
    empty = colour_dataset()
    empty["validation"] = empty["validation"].select([])
    _expect_error(tmp_path, checkpoint, "split 'validation' is empty: the query set", dataset=empty, eval_splits=["validation"])
    with pytest.raises(ValueError, match="need --gnd_file"):
        RetrievalArguments(images_dir=str(tmp_path))


def test_a_negative_label_is_refused_not_scored_as_a_miss(checkpoint, tmp_path):  # noqa: F811
    """datasets marks a missing label -1 (e.g. a test split): such a query has no class to retrieve. It used to be
    scored AP 0 (its positives counted from the last class, `per_label[-1]`) and averaged in, silently."""
    database, queries = torch.randn(6, 4), torch.randn(3, 4)
    database_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"query labels hold -1"):
        evaluate_by_label(database, database_labels, queries, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match=r"database labels hold -1"):
        evaluate_by_label(database, torch.tensor([0, -1, 1, 1, 2, 2]), queries, torch.tensor([0, 1, 2]))
    unlabelled = colour_dataset()
    unlabelled["validation"] = unlabelled["validation"].map(lambda row: {"label": -1})
    _expect_error(tmp_path, checkpoint, r"split 'validation' has label -1", dataset=unlabelled, eval_splits=["validation"])


def test_convert_gnd_writes_only_a_json_target(tmp_path):
    """A target without `.json` used to be written, then fail to load (load_gnd reads .pkl / .json by suffix): a
    file nothing reads, a traceback after the write; with --overwrite onto the pickle it replaced the original."""
    source = tmp_path / "gnd_toy.pkl"
    original = pickle.dumps(_gnd_dict(), protocol=2)
    source.write_bytes(original)
    with pytest.raises(ValueError, match=r"gnd_toy.txt: the JSON conversion is written to a \.json file"):
        convert_gnd(source, tmp_path / "gnd_toy.txt")
    assert not (tmp_path / "gnd_toy.txt").exists()
    with pytest.raises(ValueError, match=r"\.json file"):
        retrieval_main(["convert-gnd", str(source), str(source), "--overwrite"])
    assert source.read_bytes() == original


def test_whole_query_images_do_not_replace_the_cropped_protocol_on_the_card(checkpoint, tmp_path):  # noqa: F811
    """`--crop_queries false` is not the revisited protocol (queries cropped to their box); its mAP used to take
    the same card entry as the cropped run's and replace it, under the same name."""
    import run_retrieval as cli

    gnd_file = _revisited_layout(tmp_path / "toy6")
    argv = ["--model_name_or_path", str(checkpoint), "--gnd_file", str(gnd_file), "--output_dir", str(tmp_path / "out"),
            "--feature_cache_dir", str(tmp_path / "cache"), "--progress", "false"]
    cropped = cli.main(argv)
    whole = cli.main([*argv, "--crop_queries", "false"])
    assert [r["crop_queries"] for r in cropped["results"]] == [True] * 3
    assert [r["crop_queries"] for r in whole["results"]] == [False] * 3
    card = ModelCard.load(checkpoint / "README.md")
    entries = {r.metric_config: r for r in card.data.eval_results if r.dataset_name == "toy5"}  # gnd_toy5.pkl
    rows = {r["protocol"]: r for r in cropped["results"]}
    for protocol in ("easy", "medium", "hard"):
        assert entries[f"retrieval-{protocol}-map-cls"].metric_value == round(rows[protocol]["map"], 2)
        assert "whole query images" in entries[f"retrieval-{protocol}-map-cls-whole"].metric_name


def test_thumbnail_output_size_is_pils():
    """The patch check before extraction predicts the thumbnail's size; it used plain rounding where PIL picks the
    floor or ceiling closer in aspect (518x896 -> PIL 129x224, predicted 130x224)."""
    from modeling_attg_mae.evaluation.retrieval import ThumbnailTransform

    transform = ThumbnailTransform(224, (0.5,) * 3, (0.5,) * 3)
    sizes = [(518, 896), (648, 7), (604, 4), (1272, 8), (717, 8), (48, 40), (40, 56), (224, 100), (1000, 1000), (3, 999)]
    rng = np.random.default_rng(0)
    sizes += [tuple(int(v) for v in rng.integers(1, 1500, 2)) for _ in range(300)]
    for width, height in sizes:
        image = Image.new("L", (width, height))
        image.thumbnail((224, 224), Image.Resampling.LANCZOS)
        assert transform.output_size(width, height) == image.size, (width, height)


def test_restricted_loader_refuses_bytes_of_a_size(tmp_path):
    """`bytes(n)` / `bytearray(n)` are allowed for the buffers protocol 2 stores, but with an int they allocate n
    zero bytes: a 40-byte file could ask for 100 GB. No pickled buffer is built that way; refuse it."""
    for name in ("bytes", "bytearray"):
        path = tmp_path / f"gnd_{name}.pkl"
        # protocol 0 by hand: builtins.<name>(100000000000)
        path.write_bytes(f"cbuiltins\n{name}\n(I100000000000\ntR.".encode())
        with pytest.raises(ValueError, match=rf"{name}\(100000000000\)"):
            load_gnd_pickle(path)
    path = tmp_path / "gnd_ok.pkl"
    path.write_bytes(pickle.dumps({**_gnd_dict(), "extra": [b"", b"ab", bytearray(b"cd")]}, protocol=2))
    assert load_gnd_pickle(path)["extra"] == [b"", b"ab", bytearray(b"cd")]


def test_another_image_size_does_not_replace_the_default_size_on_the_card(checkpoint, tmp_path):  # noqa: F811
    """`--image_size` changes the protocol (revisitop's 1024 px vs DINO's 224); a run at another size used to take
    the default-size run's card entry and replace its mAP under the same name."""
    import run_retrieval as cli

    gnd_file = _revisited_layout(tmp_path / "toy7")
    argv = ["--model_name_or_path", str(checkpoint), "--gnd_file", str(gnd_file), "--output_dir", str(tmp_path / "out"),
            "--feature_cache_dir", str(tmp_path / "cache"), "--progress", "false", "--dataset_label", "toy7"]
    default = cli.main(argv)
    smaller = cli.main([*argv, "--image_size", "16"])
    assert {r["image_size"] for r in default["results"]} == {32} and {r["image_size"] for r in smaller["results"]} == {16}
    card = ModelCard.load(checkpoint / "README.md")
    entries = {r.metric_config: r for r in card.data.eval_results if r.dataset_name == "toy7"}
    rows = {r["protocol"]: r for r in default["results"]}
    for protocol in ("easy", "medium", "hard"):
        assert entries[f"retrieval-{protocol}-map-cls"].metric_value == round(rows[protocol]["map"], 2)
        assert "16-px images" in entries[f"retrieval-{protocol}-map-cls-16px"].metric_name


def test_two_ground_truths_of_the_same_name_keep_their_own_card_entries(tmp_path):
    import run_retrieval as cli
    from tests.conftest import EVAL_CHECKPOINT_OVERRIDES, save_tiny_checkpoint

    # the same images, two different ground truths, both saved as gnd_toy5.pkl (in folders a/ and b/): both label
    # "toy5". B has other positives and no hard image, so its Hard is undefined: written to the card under the same
    # name, B's Easy / Medium replaced A's and A's Hard 100.00 stayed next to them
    model = save_tiny_checkpoint(tmp_path / "model", seed=0, **EVAL_CHECKPOINT_OVERRIDES)
    gnd_a = _revisited_layout(tmp_path / "a")
    gnd_b = _revisited_layout(tmp_path / "b")
    other = {**load_gnd(gnd_b), "gnd": [
        {"bbx": np.array([4.0, 6.0, 36.0, 30.0]), "easy": np.array([5, 0]), "hard": np.array([], dtype=np.int64),
         "junk": np.array([3])},
        {"bbx": np.array([4.0, 6.0, 36.0, 30.0]), "easy": np.array([1, 2, 3]), "hard": np.array([], dtype=np.int64),
         "junk": np.array([], dtype=np.int64)}]}
    gnd_b.write_bytes(pickle.dumps(other))
    payloads = {}
    for name, gnd_file in (("a", gnd_a), ("b", gnd_b)):
        payloads[name] = cli.main(["--model_name_or_path", str(model), "--gnd_file", str(gnd_file), "--output_dir",
                                   str(tmp_path / f"out-{name}"), "--feature_cache_dir", str(tmp_path / "cache"),
                                   "--progress", "false"])
        assert payloads[name]["dataset"] == "toy5"  # the same label: only the content tells them apart
    maps = {name: {r["protocol"]: r["map"] for r in payload["results"]} for name, payload in payloads.items()}
    assert maps["b"]["hard"] is None and maps["a"]["hard"] is not None and maps["a"]["easy"] != maps["b"]["easy"]

    card = ModelCard.load(model / "README.md")
    on_card = {}  # per dataset entry of the card (name and config): protocol -> mAP
    for result in card.data.eval_results:
        entry = on_card.setdefault((result.dataset_name, result.dataset_config), {})
        entry[result.metric_config.split("-")[1]] = result.metric_value
    # each ground truth with its own values, B without a Hard: nothing replaced, nothing mixed in
    expected = {name: {p: round(v, 2) for p, v in maps[name].items() if v is not None} for name in ("a", "b")}
    assert sorted(on_card.values(), key=str) == sorted(expected.values(), key=str)
    configs = {name: f"gnd-{payload['gnd_content_sha256'][:12]}" for name, payload in payloads.items()}
    assert on_card == {("toy5", configs[name]): expected[name] for name in ("a", "b")}  # filed by content
    # the model-index files them as two datasets, and the table tells its rows apart
    index = card.data.to_dict()["model-index"][0]["results"]
    assert sorted(entry["dataset"]["config"] for entry in index) == sorted(configs.values())
    assert all(len(entry["metrics"]) == len(on_card[("toy5", entry["dataset"]["config"])]) for entry in index)
    for name in ("a", "b"):
        assert f"| toy5 ({configs[name]}) | query | retrieval mAP (easy" in card.text
    # the same ground truth again (here its JSON conversion) replaces its own entries only
    convert_gnd(gnd_a, tmp_path / "a" / "gnd_toy5.json")
    again = cli.main(["--model_name_or_path", str(model), "--gnd_file", str(tmp_path / "a" / "gnd_toy5.json"),
                      "--output_dir", str(tmp_path / "out-a2"), "--feature_cache_dir", str(tmp_path / "cache"),
                      "--progress", "false"])
    assert again["gnd_content_sha256"] == payloads["a"]["gnd_content_sha256"]
    assert len(ModelCard.load(model / "README.md").data.eval_results) == len(card.data.eval_results)
