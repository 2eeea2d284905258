"""benchmarks/study_report.py on fake records: pairing by seed, the verdict from the module's constants, p values."""

import importlib.util
import json
import os

import pytest
import scipy.stats

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "study_report.py")
SEEDS = [0, 1, 2, 5, 7]  # not contiguous, and written in another order below: pairing must go by the seed field
SPLITS = ("validation", "validation_mixed_rand", "validation_only_fg")
# per-seed k-NN CLS top-1, MAE and the AttG - MAE difference: clearly positive on validation, mixed on mixed_rand
MAE = {"validation": [70.1, 64.3, 75.8, 68.0, 72.4], "validation_mixed_rand": [60.2, 55.1, 66.7, 58.3, 63.0],
       "validation_only_fg": [40.0, 38.5, 45.2, 41.1, 44.0]}
GAIN = {"validation": [4.1, 5.3, 3.2, 6.0, 4.4], "validation_mixed_rand": [3.0, -2.5, 1.2, 4.4, -1.1],
        "validation_only_fg": [20.3, 18.2, 25.0, 22.1, 19.9]}


def load_report():
    spec = importlib.util.spec_from_file_location("study_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def values(arm, metric, split):
    """The fake per-seed values, in SEEDS order; other metrics are shifted copies of the k-NN CLS ones."""
    offset = {("knn", "cls"): 0.0, ("knn", "mean"): -9.0, ("linear", "cls"): 2.5}[metric]
    gains = GAIN[split] if arm == "attg" else [0.0] * len(SEEDS)
    return [round(m + g + offset, 1) for m, g in zip(MAE[split], gains)]


def write_records(root, setting="main"):
    for arm in ("attg", "none"):
        for i in reversed(range(len(SEEDS))):
            seed = SEEDS[i]
            at = {metric: {split: values(arm, metric, split)[i] for split in SPLITS}
                  for metric in (("knn", "cls"), ("knn", "mean"), ("linear", "cls"))}
            record = {
                "schema_version": 1, "setting": setting, "seed": seed, "data_seed": 0, "arm": arm,
                "argv": ["--output_dir", f"outputs/{setting}/{seed}-{arm}", "--seed", str(seed)],
                "knn": {"cls": at["knn", "cls"], "mean": at["knn", "mean"]},
                "linear": {"cls": at["linear", "cls"]},
                "curve": [{"step": 31 * e, "epoch": float(e),
                           **{s: at["knn", "cls"][s] * (e + 1) / 5 for s in SPLITS}} for e in range(5)],
                "object_loss_share": [{"step": s, "value": (0.6 if arm == "attg" else 0.2) + 0.001 * seed + s / 1e4}
                                      for s in range(10, 160, 10)],
                "train_seconds": 1.0,
            }
            os.makedirs(root / setting, exist_ok=True)
            (root / setting / f"seed{seed}-{arm}.json").write_text(json.dumps(record))
    return root


def test_report_pairs_by_seed_and_prints_scipy_p(tmp_path):
    report = load_report()
    text = report.render(str(write_records(tmp_path / "records")), str(tmp_path / "RESULTS.md"), draw=False)
    for metric in report.METRICS:
        for split in SPLITS:
            p = scipy.stats.ttest_rel(values("attg", metric, split), values("none", metric, split)).pvalue
            assert f"| {report.format_p(p)} |" in text, (metric, split)
    # the per-seed row of seed 5 holds seed 5's numbers in both arms (records were read in another order)
    i = SEEDS.index(5)
    row = next(line for line in text.splitlines() if line.startswith("| 5 |"))
    mae, attg = values("none", ("knn", "cls"), "validation")[i], values("attg", ("knn", "cls"), "validation")[i]
    assert f"| {mae:.1f} | {attg:.1f} | {GAIN['validation'][i]:+.1f} |" in row
    # last-epoch object share: the entries after step 150 - 31 (last logged step - steps per epoch), in %
    for arm, base in (("MAE", 0.2), ("AttG", 0.6)):
        shares = [100 * (base + 0.001 * seed + (120 + 130 + 140 + 150) / 4 / 1e4) for seed in SEEDS]
        mean = sum(shares) / len(shares)
        assert f"| {arm} | {mean:.1f} +- " in text


def test_verdict_follows_the_constants(tmp_path, monkeypatch):
    report = load_report()
    records = str(write_records(tmp_path / "records"))

    def expected():
        met = {}
        for split in report.BAR_SPLITS:
            treatment, control = values("attg", report.PRIMARY, split), values("none", report.PRIMARY, split)
            p = scipy.stats.ttest_rel(treatment, control).pvalue
            met[split] = p < report.ALPHA and sum(treatment) > sum(control)
        return met

    def verdict_line(text):
        return next(line for line in text.splitlines() if line.startswith("**Bar for AttG vs MAE"))

    met = expected()
    assert met == {"validation": True, "validation_mixed_rand": False}  # the fake data sit on both sides
    line = verdict_line(report.render(records, str(tmp_path / "RESULTS.md"), draw=False))
    assert line.startswith("**Bar for AttG vs MAE: not met**")
    assert "validation: met (" in line and "validation_mixed_rand: not met (" in line
    # a looser alpha (not the study's: only to show that the verdict reads the constant) passes mixed_rand too
    monkeypatch.setattr(report, "ALPHA", 0.9)
    assert expected() == {"validation": True, "validation_mixed_rand": True}
    line = verdict_line(report.render(records, str(tmp_path / "RESULTS.md"), draw=False))
    assert line.startswith("**Bar for AttG vs MAE: met**")


def test_missing_seed_is_an_error(tmp_path):
    report = load_report()
    records = write_records(tmp_path / "records")
    os.remove(records / "main" / "seed5-attg.json")
    with pytest.raises(ValueError, match=r"arm 'attg' has no record for seed\(s\) \[5\]"):
        report.render(str(records), str(tmp_path / "RESULTS.md"), draw=False)


def test_misplaced_record_is_an_error(tmp_path):
    report = load_report()
    records = write_records(tmp_path / "records")
    os.rename(records / "main" / "seed5-attg.json", records / "main" / "seed6-attg.json")
    with pytest.raises(ValueError, match="belongs at"):
        report.render(str(records), str(tmp_path / "RESULTS.md"), draw=False)


def test_write_replaces_only_the_block_and_draws_the_plots(tmp_path, capsys):
    report = load_report()
    records = write_records(tmp_path / "docs" / "results" / "attg_vs_mae")
    results = tmp_path / "docs" / "RESULTS.md"
    results.write_text(f"# Results\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\n## 2. Other\n")
    args = ["--records", str(records), "--results-md", str(results)]
    report.main(args)  # without --write: stdout only
    printed = capsys.readouterr().out
    assert "old" in results.read_text() and not os.path.exists(records / "main_knn_curve.png")
    report.main(args + ["--write"])
    content = results.read_text()
    assert content == f"# Results\n\nintro\n\n{report.BEGIN}\n{printed.rstrip(chr(10))}\n{report.END}\n\n## 2. Other\n"
    assert "![online k-NN top-1 of main](results/attg_vs_mae/main_knn_curve.png)" in content
    for name in ("main_knn_curve.png", "main_object_share.png"):
        assert (records / name).stat().st_size > 1000
    report.main(args + ["--write"])  # regenerating changes nothing
    assert results.read_text() == content


def test_results_md_has_the_markers():
    report = load_report()
    with open(report.RESULTS_MD) as f:
        content = f.read()
    assert content.count(report.BEGIN) == 1 and content.count(report.END) == 1


def test_a_reference_arm_is_paired_only_when_mae_reproduces_the_reference(tmp_path):
    report = load_report()
    reference = write_records(tmp_path / "reference")  # MAE + AttG, the earlier study
    study = tmp_path / "study"
    (study / "main").mkdir(parents=True)
    for seed in SEEDS:  # this study: the same MAE records, and a label-free arm with map IoUs
        mae = json.loads((reference / "main" / f"seed{seed}-none.json").read_text())
        (study / "main" / f"seed{seed}-none.json").write_text(json.dumps(mae))
        self_arm = {**mae, "arm": "self", "map_iou": [{"step": 64, "epoch": 2.0, "value": 0.3 + seed / 100},
                                                      {"step": 128, "epoch": 4.0, "value": 0.5}]}
        (study / "main" / f"seed{seed}-self.json").write_text(json.dumps(self_arm))
    text = report.render(str(study), str(tmp_path / "RESULTS.md"), draw=False, reference=(str(reference), "attg"))
    assert "every MAE run reproduces the reference MAE record exactly" in text
    assert "**Bar for AttG vs MAE: not met**" in text and "**Bar for AttG, self maps vs MAE: not met**" in text
    ious = [0.3 + seed / 100 for seed in SEEDS]
    mean, sd = sum(ious) / 5, (sum((v - sum(ious) / 5) ** 2 for v in ious) / 4) ** 0.5
    assert f"| AttG, self maps | {mean:.3f} +- {sd:.3f} (epoch 2); 0.500 +- 0.000 (epoch 4) | 1 +- 0 |" in text
    assert "| MAE | - | 1 +- 0 |" in text

    changed = json.loads((study / "main" / "seed5-none.json").read_text())
    changed["knn"]["cls"]["validation"] += 0.1  # one MAE run that does not reproduce: no pairing
    (study / "main" / "seed5-none.json").write_text(json.dumps(changed))
    text = report.render(str(study), str(tmp_path / "RESULTS.md"), draw=False, reference=(str(reference), "attg"))
    assert "the MAE runs of seed(s) [5] do not reproduce the reference MAE records" in text
    assert "Bar for AttG vs MAE" not in text
