"""benchmarks/protocol_report.py on fake records: Holm over the family, Wilcoxon beside the t-test, "cannot decide"
when a training-free baseline reaches the arms, no verdict before the protocol's seed count."""

import json
import os
import sys

import pytest
import scipy.stats

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import protocol_report  # noqa: E402
import study_report  # noqa: E402

SPLITS = ("validation", "validation_mixed_rand")
SEEDS = [10, 11, 12, 13, 14, 15, 16, 17]
MAE = [30.0, 28.5, 31.2, 29.9, 27.4, 30.8, 29.1, 28.0]
# AttG clearly above MAE; the permuted placebo close to AttG (a small, noisy gap)
ATTG_GAIN = [12.1, 10.4, 13.3, 11.0, 9.8, 12.7, 10.9, 11.5]
PLACEBO_GAP = [1.0, -0.5, 2.1, 0.3, -1.2, 0.8, 1.5, -0.2]


def arm_values(arm):
    if arm == "none":
        return MAE
    attg = [m + g for m, g in zip(MAE, ATTG_GAIN)]
    return attg if arm == "attg" else [a - g for a, g in zip(attg, PLACEBO_GAP)]


def write(root, seeds=SEEDS, raw_pixels=20.0):
    folder = root / "main"
    os.makedirs(folder, exist_ok=True)
    for i, seed in enumerate(seeds):
        for arm in ("none", "attg", "permuted"):
            value = arm_values(arm)[i]
            record = {"schema_version": 1, "setting": "main", "seed": seed, "data_seed": seed, "arm": arm,
                      "argv": [], "knn": {"cls": {s: value for s in SPLITS}, "mean": {s: value for s in SPLITS}},
                      "object_loss_share": [{"step": 10, "value": 0.5}], "curve": [{"step": 10, "epoch": 1.0}]}
            (folder / f"seed{seed}-{arm}.json").write_text(json.dumps(record))
        baselines = {"schema_version": 1, "setting": "main", "seed": seed, "data_seed": seed, "arm": "baselines",
                     "argv": [], "knn_k": 20,
                     "training_free": {"raw_pixels": {s: raw_pixels + 0.1 * i for s in SPLITS},
                                       "mask": {s: 14.3 for s in SPLITS}},
                     "random_init": {"checkpoint_sha256": "0" * 64,
                                     "knn": {"cls": {s: 15.0 for s in SPLITS}, "mean": {s: 16.0 for s in SPLITS}}}}
        (folder / f"seed{seed}-baselines.json").write_text(json.dumps(baselines))
    protocol = {"setting": "main", "primary": {"evaluation": "knn", "pooling": "cls", "k": 20}, "splits": SPLITS,
                "alpha": 0.05, "seeds": SEEDS, "arms": ["none", "attg", "permuted"], "decide_margin": 5.0,
                "hypotheses": [{"name": "H1", "treatment": "attg", "control": "none"},
                               {"name": "H2", "treatment": "attg", "control": "permuted"}],
                "claims": [{"name": "object guidance helps", "needs": ["H1", "H2"]}]}
    (folder / "protocol.json").write_text(json.dumps(protocol))
    return root


def render(root):
    return study_report.render(str(root), str(root / "RESULTS.md"), draw=False)


def test_holm_and_wilcoxon_against_scipy(tmp_path):
    text = render(write(tmp_path / "records"))
    attg, mae, placebo = arm_values("attg"), arm_values("none"), arm_values("permuted")
    p1 = scipy.stats.ttest_rel(attg, mae).pvalue
    p2 = scipy.stats.ttest_rel(attg, placebo).pvalue
    # four tests (2 hypotheses x 2 identical splits): Holm by hand
    ordered = sorted([p1, p1, p2, p2])
    holm, running = [], 0.0
    for position, p in enumerate(ordered):
        running = max(running, min(1.0, (4 - position) * p))
        holm.append(running)
    holm_p1, holm_p2 = holm[1], holm[3]  # p1 < p2: p1's two copies come first
    w2 = scipy.stats.wilcoxon(attg, placebo, method="exact").pvalue
    h1 = next(line for line in text.splitlines() if line.startswith("| H1") and "| validation |" in line)
    h2 = next(line for line in text.splitlines() if line.startswith("| H2") and "| validation |" in line)
    assert f"| {p1:.3g} | {holm_p1:.3g} |" in h1 and h1.endswith("| met |")
    assert f"| {p2:.3g} | {holm_p2:.3g} | {w2:.3g} |" in h2
    assert holm_p2 > 0.05 and h2.endswith("| not significant |")
    assert "**H1** (AttG > MAE): **met**" in text
    assert "**H2** (AttG > AttG, permuted maps (placebo)): **not significant**" in text
    assert 'Claim "object guidance helps" (needs H1, H2): **not supported**' in text
    assert "| raw pixels (no training) |" in text and "| random init, CLS (no training) |" in text


def test_a_baseline_that_reaches_the_arms_cannot_decide(tmp_path):
    # raw pixels at 40.85 on average, AttG at 40.825: no verdict can be read on either split
    text = render(write(tmp_path / "records", raw_pixels=40.5))
    assert "| validation | AttG 40.8 | raw pixels 40.9 | -0.0 | cannot decide |" in text
    assert "**H1** (AttG > MAE): **cannot decide**" in text
    assert 'Claim "object guidance helps" (needs H1, H2): **cannot decide**' in text
    # 5.2 points below AttG: the margin (5) is met, the verdicts are read
    text = render(write(tmp_path / "other", raw_pixels=35.3))
    assert "| validation | AttG 40.8 | raw pixels 35.6 | +5.2 | yes |" in text
    assert "**H1** (AttG > MAE): **met**" in text


def test_no_verdict_before_the_protocol_seed_count(tmp_path):
    text = render(write(tmp_path / "records", seeds=SEEDS[:5]))
    assert "Interim: 5 of 8 seeds" in text
    assert "**H1** (AttG > MAE): **interim, no verdict**" in text
    assert "met**" not in text


def test_records_of_seeds_the_protocol_does_not_name_are_refused(tmp_path):
    root = write(tmp_path / "records")
    protocol = json.loads((root / "main" / "protocol.json").read_text())
    protocol["seeds"] = SEEDS[:-1]
    (root / "main" / "protocol.json").write_text(json.dumps(protocol))
    with pytest.raises(ValueError, match=r"records for seeds \[17\] that the protocol does not name"):
        render(root)


def test_a_protocol_without_its_fields_is_refused(tmp_path):
    root = write(tmp_path / "records")
    protocol = json.loads((root / "main" / "protocol.json").read_text())
    del protocol["decide_margin"]
    (root / "main" / "protocol.json").write_text(json.dumps(protocol))
    with pytest.raises(ValueError, match="the protocol lacks \\['decide_margin'\\]"):
        protocol_report.load_protocol(str(root / "main"))


# --- what the red-team review of the protocol report found: records paired silently, or a bare KeyError ---
def _edit(path, change):
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("where, change, message", [
    ("seed11-attg.json", lambda r: r.update(data_seed=99), r"seed 11: the arms were trained on different data seeds"),
    ("seed12-permuted.json", lambda r: r["knn"]["cls"].pop("validation_mixed_rand"),
     r"seed 12 arm 'permuted': no knn.cls value for split\(s\) \['validation_mixed_rand'\]"),
    # a baseline missing from the first seed's record was dropped from the "can decide" check unseen
    ("seed10-baselines.json", lambda r: r["training_free"].pop("mask"), r"every seed needs the same ones"),
    ("seed10-baselines.json", lambda r: r.update(knn_k=5), r"baselines were measured with k = 5"),
    ("protocol.json", lambda p: p["hypotheses"].append({"name": "H3", "treatment": "attg", "control": "ghost"}),
     r"names arm\(s\) \['ghost'\] that the protocol's arms"),
    ("protocol.json", lambda p: p["hypotheses"][0].update(control="attg"), r"compares arm 'attg' with itself"),
    ("protocol.json", lambda p: p["claims"].append({"name": "vacuous", "needs": []}), r"needs no hypothesis"),
    ("protocol.json", lambda p: p.update(seeds=SEEDS + SEEDS[:1]), r"the protocol's seeds repeat"),
    ("protocol.json", lambda p: p.update(splits=["validation", "validaton"]), r"no knn.cls value for split"),
])
def test_records_the_protocol_cannot_pair_are_refused_by_name(tmp_path, where, change, message):
    root = write(tmp_path)
    _edit(root / "main" / where, change)
    with pytest.raises(ValueError, match=message):
        render(root)


def test_a_protocol_without_arms_needs_the_hypotheses_arms(tmp_path):
    root = write(tmp_path)
    _edit(root / "main" / "protocol.json", lambda p: (p.pop("arms"), p["hypotheses"].append(
        {"name": "H3", "treatment": "centre", "control": "none"})))
    assert "No records yet for centre" in render(root)


def test_study_power_plans_at_alpha_over_the_family(tmp_path, capsys):
    """benchmarks/study_power.py on fake pilot records: the paired sd of each pair, and the seeds needed at
    alpha / m, against the statistics module (whose power function is tested against scipy)."""
    import study_power

    from modeling_attg_mae.evaluation.statistics import mean_and_sd, pairs_needed

    root = write(tmp_path / "records")
    study_power.main(["--records", str(root), "--setting", "main", "--pairs", "attg:none", "attg:permuted",
                      "--difference", "5", "--seeds", "8"])
    out = capsys.readouterr().out
    assert "4 tests: planned at alpha / m = 0.0125" in out
    sd = mean_and_sd(PLACEBO_GAP)[1]
    assert f"| attg - permuted | validation | 8 | {sum(PLACEBO_GAP) / 8:+.1f} | {sd:.1f} | {pairs_needed(5, sd, 0.0125)} |" in out
    with pytest.raises(SystemExit):
        study_power.main(["--records", str(root), "--setting", "main", "--pairs", "attg:sr"])
    assert "no records of arm(s) ['sr']" in capsys.readouterr().err
