"""benchmarks/eval_breadth_report.py on fake records: pairing by seed, one verdict per primary metric (from the
module's constants), scipy's paired p, the block written between its own markers only."""

import importlib.util
import json
import os
import sys

import scipy.stats

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
SEEDS = [0, 1, 2, 3, 4]
SPLITS = ("validation", "validation_mixed_rand", "validation_only_fg")
# MAE per seed, and AttG - MAE: retrieval mAP clearly better on both bar splits; attentive top-1 saturated (the
# gain changes sign), so its bar must read "not met" while retrieval's reads "met"
MAE_MAP = [36.1, 40.0, 25.9, 12.4, 45.0]
MAP_GAIN = [3.0, 4.1, 2.2, 5.5, 3.6]
MAE_ATT = [98.3, 98.0, 99.2, 99.4, 97.6]
ATT_GAIN = [-0.2, 0.4, -0.3, 0.1, 0.6]


def load_report():
    sys.path.insert(0, BENCHMARKS)
    spec = importlib.util.spec_from_file_location("eval_breadth_report", os.path.join(BENCHMARKS, "eval_breadth_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_records(root):
    for arm in ("none", "attg"):
        for i in reversed(range(len(SEEDS))):  # written out of order: pairing must go by the seed field
            m = MAE_MAP[i] + (MAP_GAIN[i] if arm == "attg" else 0)
            a = MAE_ATT[i] + (ATT_GAIN[i] if arm == "attg" else 0)
            record = {
                "schema_version": 1, "setting": "main", "seed": SEEDS[i], "data_seed": SEEDS[i], "arm": arm,
                "checkpoint_reproduces_study_record": i == 0,
                "retrieval": {s: {"mAP": m + j, "mP@1": 80.0 + i, "mP@5": 70.0, "mP@10": 60.0 - i}
                              for j, s in enumerate(SPLITS)},
                "attentive": {s: {"top1": a, "top5": 100.0} for s in SPLITS},
                "attentive_num_parameters": 67978,
                "knn": {s: {"top1": 70.0 + i + (2 if arm == "attg" else 0) * i} for s in SPLITS},
                "linear": {s: {"top1": 95.0 + 0.1 * i} for s in SPLITS},
                "seconds": {"retrieval": 10.0, "attentive": 120.0},
            }
            (root / "main").mkdir(parents=True, exist_ok=True)
            (root / "main" / f"seed{SEEDS[i]}-{arm}.json").write_text(json.dumps(record))
    return root


def test_one_verdict_per_primary_metric_with_scipy_p(tmp_path):
    report = load_report()
    text = report.render(str(write_records(tmp_path / "records")), str(tmp_path / "RESULTS.md"))
    assert "**Bar for AttG vs MAE on retrieval mAP (CLS): met**" in text
    assert "**Bar for AttG vs MAE on attentive probe top-1: not met**" in text
    assert "2 of 10 reproduce" in text  # seed 0 of both arms
    for split_offset, split in enumerate(("validation", "validation_mixed_rand")):
        attg = [m + g + split_offset for m, g in zip(MAE_MAP, MAP_GAIN)]
        mae = [m + split_offset for m in MAE_MAP]
        p = scipy.stats.ttest_rel(attg, mae).pvalue
        row = next(line for line in text.splitlines() if line.startswith(f"| retrieval mAP (CLS) | {split} |"))
        assert f"| {report.format_p(p)} |" in row and row.endswith("| met |")
    p = scipy.stats.ttest_rel([m + g for m, g in zip(MAE_ATT, ATT_GAIN)], MAE_ATT).pvalue
    row = next(line for line in text.splitlines() if line.startswith("| attentive probe top-1 | validation |"))
    assert f"| {report.format_p(p)} |" in row and row.endswith("| not met |")
    # the attentive - linear gain of MAE on validation: mean of (MAE_ATT - linear) over seeds
    gain = sum(a - (95.0 + 0.1 * i) for i, a in enumerate(MAE_ATT)) / len(SEEDS)
    assert f"| MAE | validation | 95.2 +- 0.2 | {sum(MAE_ATT) / 5:.1f}" in text and f"| {gain:+.1f} +-" in text


def test_write_replaces_only_its_own_block(tmp_path):
    report = load_report()
    results = tmp_path / "RESULTS.md"
    results.write_text("head\n<!-- study:begin -->\nkept\n<!-- study:end -->\n"
                       "<!-- eval_breadth:begin -->\nold\n<!-- eval_breadth:end -->\ntail\n")
    report.main(["--records", str(write_records(tmp_path / "records")), "--results-md", str(results), "--write"])
    content = results.read_text()
    assert "kept" in content and "old" not in content and content.endswith("tail\n")
    assert content.count("**Bar for AttG vs MAE") == 2


def test_results_md_has_the_markers():
    results = os.path.join(os.path.dirname(BENCHMARKS), "docs", "RESULTS.md")
    content = open(results).read()
    assert content.count("<!-- eval_breadth:begin -->") == 1 and content.count("<!-- eval_breadth:end -->") == 1
